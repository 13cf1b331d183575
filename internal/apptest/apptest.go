// Package apptest runs the assembled service for end-to-end tests: the real
// app wiring over a fresh database and an in-process nats-server, with the
// HTTP API on a loopback port.
package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/smtptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

// AdminToken is the bootstrap admin key of every test stack.
const AdminToken = "test-admin-token-0123456789"

// PublicBaseURL is where links in a test stack's email point.
const PublicBaseURL = "https://portal.example.test"

// Stack is a running service.
type Stack struct {
	App     *app.App
	DB      *testkit.DB
	NATS    *testkit.NATS
	SMTP    *smtptest.Server
	Server  *httptest.Server
	Logs    *testkit.LogSink
	Clock   *Clock
	workers chan error
	cancel  context.CancelFunc
}

// Options tune a stack.
type Options struct {
	// Env overrides settings by name (without the LATCHKEY_ prefix).
	Env map[string]string
	// Roles to run as workers; none runs no workers.
	Roles []app.Role
	// Handlers for the workers' events; nil means the production ones.
	Handlers app.Handlers
}

// Clock is a settable clock for expiry tests. It starts at the real time
// and runs with it unless frozen.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
	frozen *time.Time
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen != nil {
		return c.frozen.Add(c.offset)
	}
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// Freeze stops the clock where it is (Advance still moves it), for tests
// that compare answers derived from it, such as Retry-After.
func (c *Clock) Freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.frozen = &now
}

// Start brings a stack up and tears it down when the test ends.
func Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	db := testkit.NewDB(t)
	n := testkit.NewNATS(t)
	mail := smtptest.NewStarted(t, smtptest.Config{})
	env := map[string]string{
		"DATABASE_URL":    db.URL,
		"NATS_URL":        n.URL,
		"ADMIN_TOKEN":     AdminToken,
		"DATA_DIR":        t.TempDir(),
		"SMTP_URL":        mail.URL(),
		"PUBLIC_BASE_URL": PublicBaseURL,
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	cfg, err := config.Load(func(string) (string, bool) { return "", false }, env)
	if err != nil {
		t.Fatalf("apptest: config: %v", err)
	}
	log, sink := testkit.NewLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	clock := &Clock{}
	a, err := app.Open(ctx, cfg, log, app.Options{Now: clock.Now})
	if err != nil {
		cancel()
		t.Fatalf("apptest: open app: %v", err)
	}
	s := &Stack{App: a, DB: db, NATS: n, SMTP: mail, Logs: sink, Clock: clock, cancel: cancel, workers: make(chan error, 1)}
	s.Server = httptest.NewServer(a.Handler())
	handlers := opts.Handlers
	if handlers == nil && len(opts.Roles) > 0 {
		if handlers, err = a.Handlers(); err != nil {
			t.Fatalf("apptest: handlers: %v", err)
		}
	}
	if len(opts.Roles) > 0 {
		go func() { s.workers <- a.RunWorkers(ctx, opts.Roles, handlers) }()
	} else {
		s.workers <- nil
	}
	t.Cleanup(func() {
		s.Server.Close()
		cancel()
		if err := <-s.workers; err != nil {
			t.Errorf("apptest: workers: %v", err)
		}
		a.Close()
	})
	return s
}

// Response is an HTTP answer with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test when it is not JSON.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("apptest: body is not JSON (%v): %s", err, r.Body)
	}
}

// Map decodes the body as a JSON object.
func (r Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// Do sends a request; body may be nil, a string or []byte (sent as is), or
// any other value (sent as JSON). token, when set, is a bearer credential.
func (s *Stack) Do(t testing.TB, method, path string, body any, token string) Response {
	t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = bytes.NewBufferString(b)
	case []byte:
		reader = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		reader = bytes.NewReader(raw)
	}
	// Requests that hash a secret queue for the hashing slots (GOMAXPROCS of
	// them); under the race detector one argon2id hash costs ~200 ms, and a
	// test sending dozens at once on a busy 2-core machine must not time out.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.Server.URL+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	if reader != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.Server.Client().Do(req)
	if err != nil {
		t.Fatalf("apptest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// Admin sends a request with the bootstrap admin key.
func (s *Stack) Admin(t testing.TB, method, path string, body any) Response {
	t.Helper()
	return s.Do(t, method, path, body, AdminToken)
}

// WaitMail waits up to 20 s until the SMTP server has accepted n messages
// and returns them; the test fails with the stack's logs otherwise.
func (s *Stack) WaitMail(t testing.TB, n int) []smtptest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := s.SMTP.WaitForCount(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d emails (have %d): %v\nlogs:\n%s", n, s.SMTP.Count(), err, s.Logs.String())
	}
	return msgs
}

// MailRequests waits up to 20 s until the stream holds at least n
// mail.requested events and returns them in stream order.
func (s *Stack) MailRequests(t testing.TB, n int) []events.Event {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := s.App.Stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []events.Event
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.App.Stream.GetMsg(ctx, seq)
			if err != nil || m.Subject != events.SubjectPrefix+events.TypeMailRequested {
				continue
			}
			e, err := events.Decode(m.Subject, m.Data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mail requests in the stream, want %d\nlogs:\n%s", len(out), n, s.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
