package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

// newUser stores one user with a password hash and returns it as the store
// reads it.
func newUser(t *testing.T, s *store.Store) store.User {
	t.Helper()
	ctx := context.Background()
	d, err := s.CreateDomain(ctx, "login.example", "en")
	if err != nil {
		t.Fatal(err)
	}
	hash := "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	if _, err := s.CreateUsers(ctx, []store.NewUser{{DomainID: d.ID, Extension: "1001", LoginName: "1001@login.example",
		Email: "a@example.com", Locale: "en", PasswordHash: &hash}}); err != nil {
		t.Fatal(err)
	}
	u, err := s.UserByLoginName(ctx, "1001@login.example")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// complete ends a verified login as the login service does, in tx if given.
func complete(ctx context.Context, s *store.Store, tx pgx.Tx, u store.User, adm store.Admission) (uuid.UUID, error) {
	now := time.Now()
	return s.CompleteLogin(ctx, tx, u.ID, adm.CredentialVersion,
		store.NewSession{TokenHash: []byte(uuid.NewString()), CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		store.AuditEvent{Kind: "login.succeeded", ActorKind: "self"})
}

var rule = store.Lockout{Threshold: 5, Duration: 15 * time.Minute}

// TestAdmissionIsBoundedUnderConcurrency: of 50 attempts admitted at once,
// exactly the threshold's worth get through; the rest find the account
// locked by the one that used the last of the allowance.
func TestAdmissionIsBoundedUnderConcurrency(t *testing.T) {
	db := testkit.NewDB(t)
	s := store.New(db.Pool)
	u := newUser(t, s)
	now := time.Now().Truncate(time.Microsecond) // PostgreSQL's precision
	var admitted, locks, refused int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			a, err := s.AdmitLoginAttempt(context.Background(), u.LoginName, rule, now)
			var locked *store.LockedError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.As(err, &locked):
				refused++
				if !locked.Until.Equal(now.Add(rule.Duration)) {
					t.Errorf("locked until %v, want %v", locked.Until, now.Add(rule.Duration))
				}
			case err != nil:
				t.Error(err)
			default:
				admitted++
				if a.Locks {
					locks++
				}
			}
		})
	}
	wg.Wait()
	if admitted != rule.Threshold || refused != 50-rule.Threshold || locks != 1 {
		t.Fatalf("admitted %d, refused %d, locking admissions %d", admitted, refused, locks)
	}
	// The lock lapses after its duration, and the count starts again.
	a, err := s.AdmitLoginAttempt(context.Background(), u.LoginName, rule, now.Add(rule.Duration))
	if err != nil || a.Failures != 1 || a.Locks {
		t.Fatalf("after the lock: %+v, %v", a, err)
	}
	// So does a count whose last attempt is older than one duration.
	a, err = s.AdmitLoginAttempt(context.Background(), u.LoginName, rule, now.Add(2*rule.Duration+time.Second))
	if err != nil || a.Failures != 1 {
		t.Fatalf("after a quiet window: %+v, %v", a, err)
	}
}

// TestCompleteLoginLosesToAConcurrentPasswordChange plays both orders of a
// login finishing while the password changes, the race that let sessions
// verified against the old password outlive the change.
func TestCompleteLoginLosesToAConcurrentPasswordChange(t *testing.T) {
	ctx := context.Background()
	newHash := "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdG5ld3NhbHQ$bmV3aGFzaG5ld2hhc2huZXdoYXNobmV3aGFzaG5ldw"

	t.Run("the change commits first", func(t *testing.T) {
		db := testkit.NewDB(t)
		s := store.New(db.Pool)
		u := newUser(t, s)
		adm, err := s.AdmitLoginAttempt(ctx, u.LoginName, rule, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		change, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer change.Rollback(ctx)
		if err := s.SetPassword(ctx, change, u.ID, newHash, time.Now()); err != nil {
			t.Fatal(err)
		}
		// The login's completion waits on the change's row lock ...
		done := make(chan error, 1)
		go func() {
			_, err := complete(ctx, s, nil, u, adm)
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("completion did not wait for the change: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := change.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// ... and then sees that the verified password is no longer current.
		if err := <-done; !errors.Is(err, store.ErrCredentialChanged) {
			t.Fatalf("completion after the change: %v, want ErrCredentialChanged", err)
		}
	})

	t.Run("the login commits first", func(t *testing.T) {
		db := testkit.NewDB(t)
		s := store.New(db.Pool)
		u := newUser(t, s)
		adm, err := s.AdmitLoginAttempt(ctx, u.LoginName, rule, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		login, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer login.Rollback(ctx)
		session, err := complete(ctx, s, login, u, adm)
		if err != nil {
			t.Fatal(err)
		}
		// A password change, as every flow makes it: the user's row first,
		// then its sessions.
		done := make(chan error, 1)
		go func() {
			done <- s.InTx(ctx, func(tx pgx.Tx) error {
				if err := s.SetPassword(ctx, tx, u.ID, newHash, time.Now()); err != nil {
					return err
				}
				return s.RevokeOtherSessions(ctx, tx, u.ID, nil, time.Now())
			})
		}()
		select {
		case err := <-done:
			t.Fatalf("the change did not wait for the login: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := login.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var revoked bool
		if err := db.Pool.QueryRow(ctx, "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1", session).Scan(&revoked); err != nil || !revoked {
			t.Fatalf("the session started before the change survived it (revoked %v, %v)", revoked, err)
		}
	})

	t.Run("disabling counts as a change", func(t *testing.T) {
		db := testkit.NewDB(t)
		s := store.New(db.Pool)
		u := newUser(t, s)
		adm, err := s.AdmitLoginAttempt(ctx, u.LoginName, rule, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.InTx(ctx, func(tx pgx.Tx) error {
			_, err := s.SetUserStatus(ctx, tx, u.ID, "disabled", time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := complete(ctx, s, nil, u, adm); !errors.Is(err, store.ErrCredentialChanged) {
			t.Fatalf("completion after disabling: %v", err)
		}
	})
}
