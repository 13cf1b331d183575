package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// TokenPurposes lists every purpose a token may have (the tokens table's
// check constraint): what disabling an account or setting its password
// revokes.
func TokenPurposes() []string { return []string{"reset", "welcome", "setup", "legacy_confirm"} }

// Lockout is the rule that admits login attempts: Threshold attempts not
// proven right lock the account for Duration; attempts more than Duration
// apart start the count again.
type Lockout struct {
	Threshold int
	Duration  time.Duration
}

// Admission is a login attempt admitted to verification, with what to verify
// it against. The secrets and CredentialVersion come from one row version.
type Admission struct {
	UserID    uuid.UUID // uuid.Nil for an unknown login name
	DomainID  uuid.UUID
	LoginName string
	Failures  int // attempts not proven right so far, this one included
	// CredentialVersion, Status and the hashes are the account's when the
	// attempt was admitted.
	CredentialVersion int64
	Status            string
	PasswordHash      *string
	PINHash           *string
	// Locks is true for the attempt that used the last of the allowance: if
	// it fails, the account is locked from now on (it already is, for every
	// other attempt).
	Locks bool
}

// LockedError refuses an attempt without verifying it: the account (or the
// unknown login name) is locked until Until.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string { return "locked until " + e.Until.UTC().Format(time.RFC3339) }

// AdmitLoginAttempt finds the account of loginName and admits one attempt on
// it to verification, in one round trip, counting the attempt as failed
// until CompleteLogin says otherwise. It returns a *LockedError when the
// account is locked, and ErrNotFound when no account has the name.
func (s *Store) AdmitLoginAttempt(ctx context.Context, loginName string, rule Lockout, now time.Time) (Admission, error) {
	row, err := s.q.AdmitLoginAttempt(ctx, s.pool, dbsqlc.AdmitLoginAttemptParams{
		LoginName: loginName, Threshold: int32(rule.Threshold), Now: now,
		WindowStart: now.Add(-rule.Duration), LockedUntil: now.Add(rule.Duration),
	})
	if err != nil {
		return Admission{}, translate("admit login attempt", err)
	}
	if !row.Admitted {
		until := row.LockedUntil
		if until == nil || !until.After(now) {
			// Refused by a lock that a concurrent attempt took after this
			// statement's snapshot: its end is only visible to a new read.
			if until, err = s.q.GetUserLockedUntil(ctx, s.pool, row.ID); err != nil {
				return Admission{}, translate("get user lock", err)
			}
		}
		return Admission{}, lockedAt(until, now)
	}
	return Admission{
		UserID: row.ID, DomainID: row.DomainID, LoginName: row.LoginName, Failures: int(row.FailedLogins),
		CredentialVersion: row.CredentialVersion, Status: row.Status, PasswordHash: row.PasswordHash,
		PINHash: row.PinHash, Locks: row.Locks,
	}, nil
}

// AdmitUnknownLoginAttempt is AdmitLoginAttempt for a login name that
// belongs to no account, so that such names lock alike. The name is keyed by
// the SHA-256 of its lower-case form; it is never stored.
func (s *Store) AdmitUnknownLoginAttempt(ctx context.Context, loginName string, rule Lockout, now time.Time) (Admission, error) {
	key := unknownLoginKey(loginName)
	row, err := s.q.AdmitUnknownLoginAttempt(ctx, s.pool, dbsqlc.AdmitUnknownLoginAttemptParams{
		NameKey: key, Threshold: int32(rule.Threshold), Now: now,
		WindowStart: now.Add(-rule.Duration), LockedUntil: now.Add(rule.Duration),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		until, err := s.q.GetUnknownLoginLockedUntil(ctx, s.pool, key)
		if err != nil {
			return Admission{}, translate("get unknown login lock", err)
		}
		return Admission{}, lockedAt(until, now)
	}
	if err != nil {
		return Admission{}, translate("admit unknown login attempt", err)
	}
	return Admission{Failures: int(row.Failures), Locks: row.LockedUntil != nil}, nil
}

// lockedAt builds the refusal; a lock that lapsed between the two statements
// still refuses this one attempt rather than admit it unrecorded.
func lockedAt(until *time.Time, now time.Time) error {
	if until == nil || !until.After(now) {
		return &LockedError{Until: now.Add(time.Second)}
	}
	return &LockedError{Until: *until}
}

func unknownLoginKey(loginName string) []byte {
	h := sha256.Sum256([]byte(strings.ToLower(loginName)))
	return h[:]
}

// SweepUnknownLoginFailures deletes the counts of unknown names that nobody
// tried within the rule's duration; they would start again anyway.
func (s *Store) SweepUnknownLoginFailures(ctx context.Context, rule Lockout, now time.Time) (int64, error) {
	n, err := s.q.SweepUnknownLoginFailures(ctx, s.pool, now.Add(-rule.Duration))
	return n, translate("sweep unknown login failures", err)
}

// ErrCredentialChanged means the secret a login verified, or the account's
// status, changed while it was being verified: the login must not succeed.
var ErrCredentialChanged = errors.New("credential changed during verification")

// NewSession is a session to start: the digest of its bearer token and its
// lifetime.
type NewSession struct {
	TokenHash []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}

// CompleteLogin ends a verified attempt in one statement (in tx when given):
// it clears the failure count, starts the session and records the audit
// event, but only while credentialVersion is still the user's and the
// account active; otherwise ErrCredentialChanged and nothing is written. It
// returns the session's id.
func (s *Store) CompleteLogin(ctx context.Context, tx pgx.Tx, userID uuid.UUID, credentialVersion int64, session NewSession, e AuditEvent) (uuid.UUID, error) {
	id, err := s.q.CompleteLogin(ctx, s.on(tx), dbsqlc.CompleteLoginParams{
		ID: userID, CredentialVersion: credentialVersion, TokenHash: session.TokenHash, Now: session.CreatedAt,
		ExpiresAt: session.ExpiresAt, AuditKind: e.Kind, ActorKind: e.ActorKind, ActorID: e.ActorID,
		SourceAddr: e.SourceAddr, RequestID: e.RequestID,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, ErrCredentialChanged
	}
	return id, translate("complete login", err)
}

// LockUser locks the user's row in tx for a change of its credentials or
// status, and returns it. Every such change locks the user before touching
// its tokens or sessions, so two of them cannot deadlock.
func (s *Store) LockUser(ctx context.Context, tx pgx.Tx, id uuid.UUID) (User, error) {
	row, err := s.q.LockUser(ctx, tx, id)
	if err != nil {
		return User{}, translate("lock user", err)
	}
	return userFromRow(row.User, row.DomainName), nil
}

// SetUserStatus sets active or disabled in tx and bumps the credential
// version; false when the user already had that status.
func (s *Store) SetUserStatus(ctx context.Context, tx pgx.Tx, id uuid.UUID, status string, now time.Time) (bool, error) {
	_, err := s.q.SetUserStatus(ctx, tx, dbsqlc.SetUserStatusParams{ID: id, Status: status, Now: now})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, translate("set user status", err)
}
