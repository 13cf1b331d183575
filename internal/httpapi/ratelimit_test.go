package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/apptest"
)

// from sends a JSON POST to s as if through a proxy that passes
// X-Forwarded-For: xff (none when empty). The TCP peer is always loopback.
func from(t *testing.T, s *apptest.Stack, xff, path string, body any) apptest.Response {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.Server.URL+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := s.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apptest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// forgotUnknown asks for a reset of an account that does not exist: in the
// default explicit mode the answer is 404, after the per-address limit.
func forgotUnknown(t *testing.T, s *apptest.Stack, xff string) apptest.Response {
	t.Helper()
	return from(t, s, xff, "/v1/password/forgot", map[string]string{"identifier": "nobody@nowhere.example"})
}

func expectAllowed(t *testing.T, r apptest.Response, what string) {
	t.Helper()
	if r.Status == http.StatusTooManyRequests || r.Status >= 500 {
		t.Fatalf("%s: %d %s; want it allowed past the rate limit", what, r.Status, r.Body)
	}
}

func expectLimited(t *testing.T, r apptest.Response, what string, maxWait time.Duration) {
	t.Helper()
	expectProblem(t, r, http.StatusTooManyRequests, "rate_limited")
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > int(maxWait.Seconds())+1 {
		t.Fatalf("%s: Retry-After %q; want 1..%d seconds", what, r.Header.Get("Retry-After"), int(maxWait.Seconds())+1)
	}
}

// Issue 9, fault 4: behind a proxy every user shared the proxy's bucket,
// and the 31st user got 429.
func TestClientsBehindATrustedProxyAreLimitedApart(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.0/8"}})
	for i := range 40 {
		expectAllowed(t, forgotUnknown(t, s, fmt.Sprintf("203.0.113.%d", i+1)), fmt.Sprintf("user %d behind the proxy", i+1))
	}
	// Each user still has a limit of its own (30/15m): a client forging
	// addresses in front of its own gains nothing, since the proxy appends
	// the address it saw and only entries right of that one are believed.
	for i := range 30 {
		expectAllowed(t, forgotUnknown(t, s, fmt.Sprintf("10.%d.0.1, 198.51.100.7", i)), fmt.Sprintf("request %d of one client", i+1))
	}
	expectLimited(t, forgotUnknown(t, s, "10.99.0.1, 198.51.100.7"), "31st request of one client", 30*time.Second)
}

// The audit trail records the client behind the proxy, not the proxy.
func TestAuditRecordsTheClientBehindTheProxy(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.0/8"}})
	expectProblem(t, from(t, s, "192.0.2.44", "/v1/login", map[string]string{"login_name": "nobody@nowhere.example", "secret": "wrong secret"}), 401, "invalid_credentials")
	var addr string
	if err := s.DB.Pool.QueryRow(context.Background(),
		"SELECT source_addr FROM audit_events WHERE kind = 'login.failed'").Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != "192.0.2.44" {
		t.Fatalf("audit source_addr = %q, want the client behind the proxy (192.0.2.44)", addr)
	}
}

// Without the peer among the trusted proxies, X-Forwarded-For is a
// client's claim and changes nothing.
func TestForwardedForFromAnUntrustedPeerIsIgnored(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8"}})
	for i := range 30 {
		expectAllowed(t, forgotUnknown(t, s, fmt.Sprintf("203.0.113.%d", i+1)), fmt.Sprintf("request %d", i+1))
	}
	expectLimited(t, forgotUnknown(t, s, "203.0.113.200"), "31st request with a forged X-Forwarded-For", 30*time.Second)
}
