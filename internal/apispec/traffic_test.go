package apispec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
)

// client sends requests through a stack's test client, which the contract
// checks.
type client struct {
	t *testing.T
	s *apptest.Stack
}

// do sends a request; body is nil, a string sent as is, or a value sent as
// JSON (with Content-Type: application/json unless header sets one).
func (c client) do(method, path string, body any, header http.Header) apptest.Response {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.s.Server.URL+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.s.Server.Client().Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return apptest.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// admin sends a request with the bootstrap admin key.
func (c client) admin(method, path string, body any, header ...string) apptest.Response {
	c.t.Helper()
	return c.do(method, path, body, headers(append([]string{"Authorization", "Bearer " + apptest.AdminToken}, header...)...))
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// expect fails the test unless the answer has status and, for a problem,
// code; it returns the body as a map (nil for an empty one).
func expect(t *testing.T, r apptest.Response, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.Status, status, code, r.Body)
	}
	if len(r.Body) == 0 || !strings.Contains(r.Header.Get("Content-Type"), "json") {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		return nil // an array
	}
	if code != "" && m["code"] != code {
		t.Fatalf("code %v, want %s: %s", m["code"], code, r.Body)
	}
	return m
}

var resetLink = regexp.MustCompile(regexp.QuoteMeta(apptest.PublicBaseURL) + `/reset\?token=([A-Za-z0-9_-]+)`)

// newestToken waits for the n-th email and returns its reset token.
func newestToken(t *testing.T, s *apptest.Stack, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := s.SMTP.WaitForCount(ctx, n)
	if err != nil {
		t.Fatalf("waiting for email %d: %v\nlogs:\n%s", n, err, s.Logs.String())
	}
	p, err := msgs[n-1].Parse()
	if err != nil {
		t.Fatal(err)
	}
	m := resetLink.FindStringSubmatch(p.Text)
	if m == nil {
		t.Fatalf("no reset link in email %d:\n%s", n, p.Text)
	}
	return m[1]
}

// TestTrafficMatchesOpenAPI drives the flows of a client and an admin
// through the real service (PostgreSQL, JetStream, the tokens and mailer
// workers, SMTP), successes and refusals alike, and checks every request
// and answer against the OpenAPI document (see contract). It ends by
// requiring that every documented operation was exercised and that the
// usual refusals were all seen, so every schema in the document is proven
// by a real answer.
func TestTrafficMatchesOpenAPI(t *testing.T) {
	s := apptest.Start(t, apptest.Options{
		Roles: []app.Role{app.RoleTokens, app.RoleMailer},
		Env:   map[string]string{"LOCKOUT_THRESHOLD": "3", "RATE_LIMIT_PER_ACCOUNT": "3/15m"},
	})
	hc := s.Server.Client()
	chk := newContract(t, hc.Transport)
	hc.Transport = chk
	c := client{t: t, s: s}
	const (
		acme     = "acme.11111.service"
		other    = "other.22222.service"
		password = "original passphrase 42"
	)

	// Operations.
	expect(t, c.do("GET", "/healthz", nil, nil), 200, "")
	expect(t, c.do("GET", "/readyz", nil, nil), 200, "")
	expect(t, c.do("GET", "/metrics", nil, nil), 200, "")
	doc := c.do("GET", "/v1/openapi.json", nil, nil)
	expect(t, doc, 200, "")
	expect(t, c.do("GET", "/v1/openapi.json", nil, headers("If-None-Match", doc.Header.Get("ETag"))), 304, "")
	expect(t, c.do("GET", "/v1/nothing-here", nil, nil), 404, "not_found")
	expect(t, c.do("DELETE", "/v1/login", nil, nil), 405, "method_not_allowed")

	// Domains, with Idempotency-Key.
	expect(t, c.do("POST", "/v1/admin/domains", map[string]string{"name": acme}, nil), 401, "unauthorized")
	key := uuid.NewString()
	created := c.admin("POST", "/v1/admin/domains", map[string]string{"name": acme}, "Idempotency-Key", key)
	expect(t, created, 201, "")
	replay := c.admin("POST", "/v1/admin/domains", map[string]string{"name": acme}, "Idempotency-Key", key)
	expect(t, replay, 201, "")
	if replay.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replay.Body, created.Body) {
		t.Fatalf("the retry is not the stored answer: %s %s", replay.Header, replay.Body)
	}
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": other}, "Idempotency-Key", key), 422, "idempotency_key_reused")
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": other}, "Idempotency-Key", "two words"), 400, "invalid_idempotency_key")
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": other, "locale": "fr-CA"}), 201, "")
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": acme}), 409, "domain_exists")
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": "not a domain!", "colour": "red"}), 422, "validation_failed")
	expect(t, c.admin("POST", "/v1/admin/domains", `{"name":`), 400, "invalid_json")
	expect(t, c.admin("POST", "/v1/admin/domains", `name=x`, "Content-Type", "application/x-www-form-urlencoded"), 415, "unsupported_media_type")
	scoped, _, err := adminkeys.Create(context.Background(), s.App.Store, "acme only", acme)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, c.do("POST", "/v1/admin/domains", map[string]string{"name": "third.service"}, headers("Authorization", "Bearer "+scoped)), 403, "forbidden")
	expect(t, c.do("GET", "/v1/admin/dead-letters", nil, headers("Authorization", "Bearer "+scoped)), 403, "forbidden")

	// Users: one, an import, and what is refused.
	one := c.admin("POST", "/v1/admin/users", map[string]any{
		"domain": acme, "extension": "1001", "email": "jason@example.com", "first_name": "Jason", "last_name": "Lord",
		"password": password,
	})
	u := expect(t, one, 201, "")
	userID, loginName := u["id"].(string), u["login_name"].(string)
	imported := c.admin("POST", "/v1/admin/users", []map[string]any{
		{"domain": acme, "extension": "1002", "email": "ann@example.com", "first_name": "Ann", "password": password, "pin": "80476"},
		{"domain": other, "extension": "1001", "email": "jason@example.com", "locale": "de", "login_name": "jason.other"},
	})
	expect(t, imported, 201, "")
	var users []map[string]any
	if err := json.Unmarshal(imported.Body, &users); err != nil || len(users) != 2 {
		t.Fatalf("import answered %s", imported.Body)
	}
	annID, annLogin := users[0]["id"].(string), users[0]["login_name"].(string)
	expect(t, c.admin("POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1001", "email": "x@example.com"}), 409, "user_exists")
	expect(t, c.admin("POST", "/v1/admin/users", []any{}), 422, "empty_import")
	expect(t, c.admin("POST", "/v1/admin/users", map[string]any{"domain": "nowhere.service", "extension": "x y", "email": "no", "password": "short"}), 422, "validation_failed")
	many := make([]map[string]string, 501)
	for i := range many {
		many[i] = map[string]string{"domain": acme, "extension": fmt.Sprint(5000 + i), "email": "bulk@example.com"}
	}
	expect(t, c.admin("POST", "/v1/admin/users", many), 413, "import_too_large")
	expect(t, c.admin("POST", "/v1/admin/users", map[string]string{"domain": acme, "extension": "1", "email": "big@example.com", "first_name": strings.Repeat("x", 70<<10)}), 413, "body_too_large")

	// Every Location answers a GET, and an admin changes a user.
	t.Run("resources behind Location", func(t *testing.T) {
		if d := expect(t, c.admin("GET", created.Header.Get("Location"), nil), 200, ""); d["name"] != acme {
			t.Errorf("GET %s = %v", created.Header.Get("Location"), d)
		}
		expect(t, c.admin("GET", "/v1/admin/domains/"+uuid.NewString(), nil), 404, "domain_not_found")
		expect(t, c.admin("GET", "/v1/admin/domains?limit=1", nil), 200, "")
		if got := expect(t, c.admin("GET", one.Header.Get("Location"), nil), 200, ""); got["id"] != userID {
			t.Errorf("GET %s = %v", one.Header.Get("Location"), got)
		}
		expect(t, c.admin("GET", "/v1/admin/users/"+uuid.NewString(), nil), 404, "user_not_found")
		changed := expect(t, c.admin("PATCH", "/v1/admin/users/"+annID, map[string]string{"first_name": "Anne", "locale": "fr"}), 200, "")
		if changed["first_name"] != "Anne" || changed["locale"] != "fr" || changed["last_name"] != "" {
			t.Errorf("PATCH = %v", changed)
		}
		cleared := expect(t, c.admin("PATCH", "/v1/admin/users/"+annID, `{"first_name":null,"locale":null}`, "Content-Type", "application/merge-patch+json"), 200, "")
		if cleared["first_name"] != "" || cleared["locale"] != "en" {
			t.Errorf("PATCH with nulls = %v", cleared)
		}
		expect(t, c.admin("PATCH", "/v1/admin/users/"+annID, map[string]string{"extension": "1001"}), 409, "user_exists")
		expect(t, c.admin("PATCH", "/v1/admin/users/"+annID, `{"email":null}`), 422, "validation_failed")
		expect(t, c.admin("PATCH", "/v1/admin/users/"+annID, map[string]string{"email": "not an email"}), 422, "validation_failed")
		expect(t, c.admin("PATCH", "/v1/admin/users/"+uuid.NewString(), map[string]string{"first_name": "Nobody"}), 404, "user_not_found")
	})

	// Listing users.
	page := expect(t, c.admin("GET", "/v1/admin/users?domain="+acme+"&limit=1", nil), 200, "")
	expect(t, c.admin("GET", "/v1/admin/users?password_set=true&after="+page["next"].(string), nil), 200, "")
	expect(t, c.admin("GET", "/v1/admin/users?password_set=perhaps&limit=0", nil), 422, "validation_failed")
	expect(t, c.admin("GET", "/v1/admin/users?domain=nowhere.service", nil), 404, "domain_not_found")
	expect(t, c.admin("GET", "/v1/admin/dead-letters?limit=10", nil), 200, "")
	expect(t, c.admin("GET", "/v1/admin/dead-letters?limit=many", nil), 422, "validation_failed")

	// Forgot password → inspect → reset → login → me → logout.
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": loginName}, headers("Idempotency-Key", uuid.NewString())), 202, "")
	token := newestToken(t, s, 1)
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": "nobody@example.com"}, nil), 404, "account_not_found")
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": "jason@example.com"}, nil), 409, "account_ambiguous")
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": "two words"}, nil), 422, "validation_failed")
	info := expect(t, c.do("POST", "/v1/tokens/inspect", map[string]string{"token": token}, nil), 200, "")
	if info["login_name"] != loginName {
		t.Fatalf("inspect = %v", info)
	}
	expect(t, c.do("POST", "/v1/tokens/inspect", map[string]string{"token": strings.Repeat("x", 43)}, nil), 410, "link_expired")
	expect(t, c.do("POST", "/v1/password/reset", map[string]string{"token": token, "new_password": "password", "confirm_password": "password"}, nil), 422, "validation_failed")
	newPassword := "brand new passphrase 43"
	reset := expect(t, c.do("POST", "/v1/password/reset", map[string]string{"token": token, "new_password": newPassword, "confirm_password": newPassword}, nil), 200, "")
	if _, ok := reset["session"]; !ok {
		t.Fatalf("reset = %v, want a session", reset)
	}
	expect(t, c.do("POST", "/v1/password/reset", map[string]string{"token": token, "new_password": newPassword, "confirm_password": newPassword}, nil), 410, "link_expired")
	login := expect(t, c.do("POST", "/v1/login", map[string]string{"login_name": loginName, "secret": newPassword}, nil), 200, "")
	session := login["session"].(map[string]any)["token"].(string)
	me := expect(t, c.do("GET", "/v1/me", nil, headers("Authorization", "Bearer "+session)), 200, "")
	if me["id"] != userID {
		t.Fatalf("me = %v", me)
	}
	expect(t, c.do("GET", "/v1/me", nil, nil), 401, "unauthenticated")
	expect(t, c.do("POST", "/v1/logout", nil, headers("Authorization", "Bearer "+session)), 204, "")
	expect(t, c.do("POST", "/v1/logout", nil, headers("Authorization", "Bearer "+session)), 401, "unauthenticated")
	expect(t, c.do("POST", "/v1/login", map[string]string{"login_name": loginName}, nil), 422, "validation_failed")

	// Lockout: the third failure locks.
	for range 3 {
		expect(t, c.do("POST", "/v1/login", map[string]string{"login_name": annLogin, "secret": "wrong password"}, nil), 401, "invalid_credentials")
	}
	expect(t, c.do("POST", "/v1/login", map[string]string{"login_name": annLogin, "secret": password}, nil), 423, "account_locked")

	// The per-account limit of recovery requests (3 in 15 minutes).
	for range 3 {
		expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": annLogin}, nil), 202, "")
	}
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": annLogin}, nil), 429, "rate_limited")

	// An admin's actions on a user.
	disabled := expect(t, c.admin("POST", "/v1/admin/users/"+annID+"/disable", nil, "Idempotency-Key", uuid.NewString()), 200, "")
	if disabled["status"] != "disabled" {
		t.Fatalf("disable = %v", disabled)
	}
	expect(t, c.admin("POST", "/v1/admin/users/"+annID+"/password-reset", nil), 409, "account_disabled")
	expect(t, c.admin("POST", "/v1/admin/users/"+annID+"/enable", nil), 200, "")
	expect(t, c.admin("POST", "/v1/admin/users/"+userID+"/password-reset", nil, "Idempotency-Key", uuid.NewString()), 202, "")
	expect(t, c.admin("POST", "/v1/admin/users/"+uuid.NewString()+"/password-reset", nil), 404, "user_not_found")
	expect(t, c.admin("POST", "/v1/admin/users/not-a-uuid/disable", nil), 404, "user_not_found")
	expect(t, c.admin("GET", "/v1/admin/deliveries?user_id="+userID, nil), 200, "")
	expect(t, c.admin("GET", "/v1/admin/deliveries?user_id="+uuid.NewString(), nil), 404, "user_not_found")
	expect(t, c.admin("GET", "/v1/admin/deliveries?user_id=someone", nil), 422, "validation_failed")

	// An outage: NATS stops, the API says so, and it comes back.
	chk.outage(true)
	s.NATS.Stop()
	expect(t, c.do("GET", "/readyz", nil, nil), 503, "")
	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": loginName}, nil), 503, "unavailable")
	s.NATS.Start(t)
	for deadline := time.Now().Add(20 * time.Second); c.do("GET", "/readyz", nil, nil).Status != 200; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not ready again 20 s after NATS came back")
		}
	}
	chk.outage(false)

	chk.assertCovered(t, 200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 423, 429, 503)
}
