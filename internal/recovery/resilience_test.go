package recovery_test

import (
	"context"
	"testing"
	"time"
)

// TestNATSRestart: while NATS is down the API says so (503, Retry-After)
// instead of failing obscurely; once it is back, requests and the workers'
// consumers resume on their own, and nothing accepted is lost.
func TestNATSRestart(t *testing.T) {
	s := start(t, map[string]string{"RATE_LIMIT_PER_ACCOUNT": "100/1m"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	s.WaitMail(t, 1)

	s.NATS.Stop()
	down := forgot(t, s, u.LoginName)
	if m := expectStatus(t, down, 503); m["code"] != "unavailable" || down.Header.Get("Retry-After") == "" {
		t.Fatalf("with NATS down: %v", m)
	}
	if r := s.Do(t, "GET", "/readyz", nil, ""); r.Status != 503 {
		t.Fatalf("readyz with NATS down: %d", r.Status)
	}

	s.NATS.Start(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := forgot(t, s, u.LoginName)
		if r.Status == 202 {
			break
		}
		if r.Status != 503 || time.Now().After(deadline) {
			t.Fatalf("after the restart: %d %s", r.Status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	token := tokenFrom(t, parse(t, s.WaitMail(t, 2)[1]))
	time.Sleep(time.Second)
	if n := s.SMTP.Count(); n != 2 {
		t.Fatalf("%d emails: a request refused with 503 was sent anyway", n)
	}
	expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
	// The notifier's consumer resumed too.
	s.WaitMail(t, 3)
}

// TestDatabaseConnectionsDropped: PostgreSQL drops every connection (a
// restart or failover looks like this to the pools); the service reconnects
// and the whole flow still works.
func TestDatabaseConnectionsDropped(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	s.WaitMail(t, 1)

	var killed int
	if err := s.DB.Pool.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		 WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no service connection was open to drop")
	}
	// Pools check connections idle for over a second before using them.
	time.Sleep(1500 * time.Millisecond)
	expectStatus(t, forgot(t, s, u.Email), 202)
	token := tokenFrom(t, parse(t, s.WaitMail(t, 2)[1]))
	expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
	expectStatus(t, login(t, s, u.LoginName, newPassword), 200)
}
