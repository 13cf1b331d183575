package httpapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

const (
	acme = "acme.11111.service"
	evil = "evil.example"
)

func scopedKey(t *testing.T, s *apptest.Stack, domain string) string {
	t.Helper()
	key, _, err := adminkeys.Create(context.Background(), s.App.Store, domain+" admin", domain)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func createUserAs(t *testing.T, s *apptest.Stack, key string, fields map[string]any) map[string]any {
	t.Helper()
	r := s.Do(t, "POST", "/v1/admin/users", fields, key)
	if r.Status != 201 {
		t.Fatalf("create %v: %d %s", fields, r.Status, r.Body)
	}
	return r.Map(t)
}

// TestScopedKeyCannotCaptureAnotherDomainsIdentifiers: a key scoped to
// evil.example could create a user whose login name was the email of an
// acme user (and then receive that user's reset emails), squat acme's
// default login names, and learn from 409s which names exist elsewhere.
// Now it creates names only under @evil.example, and whether a name exists
// elsewhere changes nothing in its answer.
func TestScopedKeyCannotCaptureAnotherDomainsIdentifiers(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, acme)
	createDomain(t, s, evil)
	s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1001", "email": "jason@example.com"})
	key := scopedKey(t, s, evil)

	attempt := func(loginName string) map[string]any {
		t.Helper()
		m := expectProblem(t, s.Do(t, "POST", "/v1/admin/users", map[string]any{
			"domain": evil, "extension": "66", "email": "attacker@evil.example", "login_name": loginName,
		}, key), 422, "validation_failed")
		if fieldCodes(m)["login_name"] != "login_name_outside_domain" {
			t.Fatalf("%s: %v", loginName, m["errors"])
		}
		return m
	}
	// An existing email and one that exists nowhere; an existing default
	// login name and a free one; a plain name taken elsewhere and a free one.
	assertSameProblem(t, attempt("jason@example.com"), attempt("nobody@example.com"), "jason", "nobody")
	assertSameProblem(t, attempt("1001@"+acme), attempt("1002@"+acme), "1001", "1002")
	attempt("1001")
	// In its own namespace it works, and acme keeps its extensions.
	createUserAs(t, s, key, map[string]any{"domain": evil, "extension": "66", "email": "a@evil.example", "login_name": "boss@" + evil})
	createUserAs(t, s, scopedKey(t, s, acme), map[string]any{"domain": acme, "extension": "1002", "email": "b@example.com"})
}

// TestUnscopedKeysCannotCaptureEither: an operator's key sees every domain,
// yet a login name it assigns still cannot be another existing domain's
// (…@acme) or the email of another domain's user; and a domain cannot be
// created over login names that already use its namespace.
func TestUnscopedKeysCannotCaptureEither(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, acme)
	createDomain(t, s, evil)
	s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1001", "email": "jason@example.com"})
	for name, code := range map[string]string{
		"1002@" + acme:            "login_name_in_other_domain",
		"1002@ACME.11111.service": "login_name_in_other_domain",
		"JASON@example.com":       "login_name_is_email_elsewhere",
	} {
		m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
			"domain": evil, "extension": "66", "email": "x@evil.example", "login_name": name,
		}), 422, "validation_failed")
		if fieldCodes(m)["login_name"] != code {
			t.Errorf("%s: %v, want %s", name, m["errors"], code)
		}
	}
	createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": evil, "extension": "67", "email": "y@evil.example", "login_name": "x@future.example"})
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "future.example"}), 409, "domain_namespace_taken")
}

// TestEveryAcceptedLoginNameLogsInAndRecovers: creation, login and recovery
// validate a login name by one rule. Before, creation counted 254 code points
// and allowed <>, while login and forgot counted 254 bytes and refused them:
// "jo<3>ann" and 200 × "é" were created but could never log in (401) nor
// recover (422).
func TestEveryAcceptedLoginNameLogsInAndRecovers(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"RATE_LIMIT_PER_ADDRESS": "100000/1m"}})
	createDomain(t, s, acme)
	for _, name := range []string{"jo<3>ann", strings.Repeat("é", 200), "a\u200bb", "bad name", `say"hi"`} {
		m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
			"domain": acme, "extension": "1", "email": "a@example.com", "login_name": name,
		}), 422, "validation_failed")
		if fieldCodes(m)["login_name"] != "invalid_login_name" {
			t.Errorf("%q: %v", name, m["errors"])
		}
	}
	accepted := []struct{ created, typed string }{
		{strings.Repeat("a", 254), strings.Repeat("a", 254)},
		{strings.Repeat("é", 127), strings.Repeat("é", 127)},        // 254 bytes
		{"Zoe\u0301@" + acme, "zoé@" + acme},                        // NFD at creation, NFC typed
		{"o'brien+portal@" + acme, " O'Brien+Portal@" + acme + " "}, // case and stray spaces
		{"日本語ユーザー", "日本語ユーザー"},
	}
	for i, c := range accepted {
		password := testkit.Secret(t)
		createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": string(rune('a' + i)),
			"email": "u@example.com", "login_name": c.created, "password": password})
		if r := s.Do(t, "POST", "/v1/login", map[string]string{"login_name": c.typed, "secret": password}, ""); r.Status != 200 {
			t.Errorf("login as %q: %d %s", c.typed, r.Status, r.Body)
		}
		if r := s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": c.typed}, ""); r.Status != 202 {
			t.Errorf("forgot %q: %d %s", c.typed, r.Status, r.Body)
		}
	}
}

// TestDisableRevokesEverythingAndEnableRevivesNothing: before, no API
// disabled a user; disabling by hand revoked nothing, so enabling again
// revived old links and sessions, and an admin reset of a disabled user
// answered 202 while nothing was sent.
func TestDisableRevokesEverythingAndEnableRevivesNothing(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, acme)
	createDomain(t, s, evil)
	password := testkit.Secret(t)
	u := createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1001", "email": "a@example.com", "password": password})
	id, name := u["id"].(string), u["login_name"].(string)
	login := func() apptest.Response {
		return s.Do(t, "POST", "/v1/login", map[string]string{"login_name": name, "secret": password}, "")
	}
	session := login().Map(t)["session"].(map[string]any)["token"].(string)
	// A live reset link, as the mailer would have minted it.
	token := testkit.Secret(t) + testkit.Secret(t)
	if _, err := s.DB.Pool.Exec(context.Background(), `INSERT INTO tokens (user_id, purpose, token_hash, expires_at)
		VALUES ($1, 'reset', sha256(convert_to($2, 'UTF8')), now() + interval '30 minutes')`, id, token); err != nil {
		t.Fatal(err)
	}
	if r := s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""); r.Status != 200 {
		t.Fatalf("inspect before: %d %s", r.Status, r.Body)
	}

	// A key of another domain cannot touch the user, exactly as if it did not exist.
	other := scopedKey(t, s, evil)
	expectProblem(t, s.Do(t, "POST", "/v1/admin/users/"+id+"/disable", nil, other), 404, "user_not_found")
	expectProblem(t, s.Do(t, "POST", "/v1/admin/users/00000000-0000-0000-0000-000000000000/disable", nil, other), 404, "user_not_found")

	r := s.Do(t, "POST", "/v1/admin/users/"+id+"/disable", nil, scopedKey(t, s, acme))
	if r.Status != 200 || r.Map(t)["status"] != "disabled" {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	check := func(when string) {
		t.Helper()
		if r := s.Do(t, "GET", "/v1/me", nil, session); r.Status != 401 {
			t.Errorf("%s: the session answers %d", when, r.Status)
		}
		if r := s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""); r.Status != 410 {
			t.Errorf("%s: the link answers %d", when, r.Status)
		}
	}
	check("disabled")
	if r := login(); r.Status != 401 {
		t.Fatalf("login while disabled: %d %s", r.Status, r.Body)
	}
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/users/"+id+"/password-reset", nil), 409, "account_disabled")

	if r := s.Admin(t, "POST", "/v1/admin/users/"+id+"/enable", nil); r.Status != 200 || r.Map(t)["status"] != "active" {
		t.Fatalf("enable: %d %s", r.Status, r.Body)
	}
	check("enabled again")
	if r := login(); r.Status != 200 {
		t.Fatalf("login after enabling: %d %s", r.Status, r.Body)
	}
	// Disabling twice is one change, audited once; so is enabling.
	s.Admin(t, "POST", "/v1/admin/users/"+id+"/disable", nil)
	s.Admin(t, "POST", "/v1/admin/users/"+id+"/disable", nil)
	var disabled, enabled int
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE kind = 'account.disabled'),
		count(*) FILTER (WHERE kind = 'account.enabled') FROM audit_events WHERE user_id = $1`, id).Scan(&disabled, &enabled); err != nil {
		t.Fatal(err)
	}
	if disabled != 2 || enabled != 1 {
		t.Fatalf("audited %d disables and %d enables, want 2 and 1", disabled, enabled)
	}
}
