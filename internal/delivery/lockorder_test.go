package delivery_test

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/events"
)

var resetLink = regexp.MustCompile(`/reset\?token=([A-Za-z0-9_-]+)`)

// TestNoDeadlockBetweenRolesOnTheSameUsers runs the tokens worker and the
// mailer on a few users under a steady stream of reset requests, while an
// admin disables and enables those users and their links are used to reset
// passwords: every role that changes a user's credentials at once. Before,
// the tokens worker locked the users (FOR UPDATE, in id order) while the
// mailer's token and audit inserts took the same rows' key-share locks in
// any order, and PostgreSQL broke deadlocks between them. Nothing may
// deadlock, and no delivery may be sent twice.
func TestNoDeadlockBetweenRolesOnTheSameUsers(t *testing.T) {
	s := start(t, []app.Role{app.RoleTokens, app.RoleMailer, app.RoleNotifier}, map[string]string{
		"RATE_LIMIT_PER_ACCOUNT": "1000000/1m", "RATE_LIMIT_PER_ADDRESS": "1000000/1m",
	})
	users := createUsers(t, s, 8)
	ctx := context.Background()
	deadlocks := func() int64 {
		var n int64
		if err := s.DB.Pool.QueryRow(ctx, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 { // portal backends publishing reset requests
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for range 10 {
					u := users[rand.IntN(len(users))]
					e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"user_id": u.ID}, time.Now())
					if err != nil {
						t.Error(err)
						return
					}
					msg, err := encode(e)
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := s.App.JS.PublishMsgAsync(msg); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() { // an admin disabling and enabling the same users
		for {
			select {
			case <-stop:
				return
			case <-time.After(40 * time.Millisecond):
			}
			u := users[rand.IntN(len(users))]
			for _, op := range []string{"disable", "enable"} {
				if r := s.Admin(t, "POST", "/v1/admin/users/"+u.ID+"/"+op, nil); r.Status != 200 {
					t.Errorf("%s: %d %s", op, r.Status, r.Body)
					return
				}
			}
		}
	})
	wg.Go(func() { // users following the newest links they got
		for {
			select {
			case <-stop:
				return
			case <-time.After(60 * time.Millisecond):
			}
			msgs := s.SMTP.Messages()
			if len(msgs) == 0 {
				continue
			}
			p, err := msgs[len(msgs)-1].Parse()
			if err != nil {
				t.Error(err)
				return
			}
			m := resetLink.FindStringSubmatch(p.Text)
			if m == nil {
				continue // a "password changed" notice
			}
			pw := "passphrase number " + time.Now().Format("150405.000000")
			r := s.Do(t, "POST", "/v1/password/reset", map[string]string{"token": m[1], "new_password": pw, "confirm_password": pw}, "")
			if r.Status != 200 && r.Status != 410 {
				t.Errorf("reset: %d %s", r.Status, r.Body)
				return
			}
		}
	})
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()
	select {
	case <-s.App.JS.PublishAsyncComplete():
	case <-time.After(20 * time.Second):
		t.Fatal("reset requests not acknowledged")
	}
	for _, c := range []string{"tokens", "mailer"} {
		waitDrained(t, s, c)
	}
	time.Sleep(2 * time.Second) // backends report their statistics within a second of going idle
	if n := deadlocks() - before; n != 0 {
		t.Errorf("PostgreSQL broke %d deadlocks", n)
	}
	if n := strings.Count(s.Logs.String(), "40P01"); n > 0 {
		t.Errorf("%d log lines report a deadlock (SQLSTATE 40P01)", n)
	}
	sent := sentPerDelivery(t, s.SMTP.Messages())
	if len(sent) == 0 {
		t.Fatal("no email sent")
	}
	t.Logf("%d emails sent", len(sent))
	for id, n := range sent {
		if n != 1 {
			t.Errorf("delivery %s sent %d times", id, n)
		}
	}
}

// waitDrained waits until a consumer has nothing pending or unacknowledged.
func waitDrained(t *testing.T, s *apptest.Stack, consumer string) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		c, err := s.App.Stream.Consumer(context.Background(), consumer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s still has %d pending, %d unacknowledged", consumer, info.NumPending, info.NumAckPending)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
