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

// An IPv6 client holds a whole /64: rotating through it does not escape.
func TestIPv6ClientsAreLimitedBySlash64(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.1", "RATE_LIMIT_PER_ADDRESS": "3/15m"}})
	for i := range 3 {
		expectAllowed(t, forgotUnknown(t, s, fmt.Sprintf("2001:db8:1:2::%x", i+1)), "request from the /64")
	}
	r := forgotUnknown(t, s, "2001:db8:1:2:ffff:ffff:ffff:ffff")
	expectLimited(t, r, "another address of the same /64", 5*time.Minute)
	// Retry-After comes from the stored state: after it, one more.
	wait, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	s.Clock.Advance(time.Duration(wait) * time.Second)
	expectAllowed(t, forgotUnknown(t, s, "2001:db8:1:2::abc"), "the /64 after Retry-After")
	expectLimited(t, forgotUnknown(t, s, "2001:db8:1:2::abd"), "the /64 again", 5*time.Minute)
	expectAllowed(t, forgotUnknown(t, s, "2001:db8:1:3::1"), "the next /64")
	// An IPv4-mapped IPv6 address is the IPv4 client.
	for range 3 {
		expectAllowed(t, forgotUnknown(t, s, "192.0.2.1"), "IPv4 client")
	}
	expectLimited(t, forgotUnknown(t, s, "::ffff:192.0.2.1"), "the same client, IPv4-mapped", 5*time.Minute)
}

// Issue 9, fault 5: each ingress process kept its own limiter, so N
// processes allowed N times the limit.
func TestIngressProcessesShareTheLimits(t *testing.T) {
	env := map[string]string{"RATE_LIMIT_PER_ADDRESS": "4/15m", "RATE_LIMIT_PER_ACCOUNT": "2/15m", "TRUSTED_PROXIES": "127.0.0.1"}
	one := apptest.Start(t, apptest.Options{Env: env})
	shared := map[string]string{"DATABASE_URL": one.DB.URL}
	for k, v := range env {
		shared[k] = v
	}
	two := apptest.Start(t, apptest.Options{Env: shared})
	stacks := []*apptest.Stack{one, two}

	// Per address: four requests split across both, the fifth refused by
	// either.
	for i := range 4 {
		expectAllowed(t, forgotUnknown(t, stacks[i%2], "203.0.113.1"), fmt.Sprintf("request %d", i+1))
	}
	expectLimited(t, forgotUnknown(t, one, "203.0.113.1"), "5th request, first process", 4*time.Minute)
	expectLimited(t, forgotUnknown(t, two, "203.0.113.1"), "5th request, second process", 4*time.Minute)

	// Logins count in a bucket of their own, shared alike.
	login := map[string]string{"login_name": "nobody@nowhere.example", "secret": "wrong secret"}
	for i := range 4 {
		expectProblem(t, from(t, stacks[i%2], "203.0.113.1", "/v1/login", login), 401, "invalid_credentials")
	}
	expectLimited(t, from(t, two, "203.0.113.1", "/v1/login", login), "5th login", 4*time.Minute)

	// Per account: two recovery requests for one account, from different
	// clients through different processes; the third is refused.
	createDomain(t, one, "acme.11111.service")
	if r := one.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "acme.11111.service", "extension": "1001",
		"email": "jason@example.com", "first_name": "Jason", "pin": "8264"}); r.Status != 201 {
		t.Fatalf("create user: %d %s", r.Status, r.Body)
	}
	forgot := map[string]string{"identifier": "jason@example.com"}
	for i := range 2 {
		if r := from(t, stacks[i%2], fmt.Sprintf("198.51.100.%d", i+1), "/v1/password/forgot", forgot); r.Status != 202 {
			t.Fatalf("recovery request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	expectLimited(t, from(t, one, "198.51.100.3", "/v1/password/forgot", forgot), "3rd request for the account", 8*time.Minute)
}

func rateLimitRows(t *testing.T, s *apptest.Stack) int {
	t.Helper()
	var n int
	if err := s.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM rate_limits").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Issue 9, fault 5: the in-process limiter held at most 100,000 keys and,
// once full of keys still limited, refused every new client. Now no number
// of keys refuses a newcomer: the table is not capped, and holds a key only
// until its allowance recovers.
func TestFloodOfDistinctClientsNeverRefusesANewOne(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.1"}})
	// A flood from rotating addresses, more keys than any bound, all still
	// limited an hour from now (seeded in one statement: through HTTP it
	// would take minutes).
	if _, err := s.DB.Pool.Exec(context.Background(), `
		INSERT INTO rate_limits (key, tat)
		SELECT sha256(('flood-' || i)::bytea), $1::timestamptz + interval '1 hour'
		FROM generate_series(1, 150000) i`, s.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	// And more through the API, from distinct IPv4 clients and /64s.
	for i := range 300 {
		xff := fmt.Sprintf("2001:db8:%x::1", i)
		if i%2 == 0 {
			xff = fmt.Sprintf("198.18.%d.%d", i/256, i%256)
		}
		expectAllowed(t, forgotUnknown(t, s, xff), "flood request "+xff)
	}
	expectAllowed(t, forgotUnknown(t, s, "192.0.2.200"), "a new client after the flood")
	expectAllowed(t, from(t, s, "192.0.2.201", "/v1/login", map[string]string{"login_name": "nobody@nowhere.example", "secret": "wrong secret"}), "a new client's login after the flood")
	if n := rateLimitRows(t, s); n < 150000 {
		t.Fatalf("%d keys left: keys still limited were dropped, forgiving their clients", n)
	}
}

// The sweep deletes the keys whose allowance has recovered, and only those.
func TestSweepDeletesRecoveredKeys(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.1"}}) // 30/15m: one per 30s
	for i := range 50 {
		expectAllowed(t, forgotUnknown(t, s, fmt.Sprintf("203.0.113.%d", i+1)), "one request")
	}
	for range 30 {
		expectAllowed(t, forgotUnknown(t, s, "198.51.100.7"), "burst")
	}
	if n := rateLimitRows(t, s); n != 51 {
		t.Fatalf("%d keys, want 51", n)
	}
	sweep := func() {
		t.Helper()
		if _, err := s.App.Store.DeleteRecoveredRateLimits(context.Background(), s.Clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	s.Clock.Advance(31 * time.Second)
	sweep()
	if n := rateLimitRows(t, s); n != 1 {
		t.Fatalf("%d keys after the sweep, want only the client that spent its burst", n)
	}
	// Its state survived: 31s later it has one request back, not thirty.
	expectAllowed(t, forgotUnknown(t, s, "198.51.100.7"), "after one interval")
	expectLimited(t, forgotUnknown(t, s, "198.51.100.7"), "the next one", 30*time.Second)
	s.Clock.Advance(15 * time.Minute)
	sweep()
	if n := rateLimitRows(t, s); n != 0 {
		t.Fatalf("%d keys a window later, want none", n)
	}
}
