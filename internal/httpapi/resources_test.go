package httpapi_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

// locationWalker sends requests and remembers every Location answered, with
// the credential that got it and the body it came with.
type locationWalker struct {
	s    *apptest.Stack
	seen []located
}

type located struct {
	route, location, key string
	body                 map[string]any
}

func (lw *locationWalker) do(t *testing.T, method, path string, body any, key string) apptest.Response {
	t.Helper()
	r := lw.s.Do(t, method, path, body, key)
	if loc := r.Header.Get("Location"); loc != "" {
		var m map[string]any
		_ = json.Unmarshal(r.Body, &m)
		lw.seen = append(lw.seen, located{route: method + " " + path, location: loc, key: key, body: m})
	}
	return r
}

// TestEveryLocationAnswersAGet: before, POST /v1/admin/domains and POST
// /v1/admin/users answered Location headers naming paths that answered 404
// (no GET route). The test drives every route that changes state, with the
// bootstrap key and with a scoped one, and GETs each Location it is given
// with the same key: 200 and the resource the Location came with.
func TestEveryLocationAnswersAGet(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"RATE_LIMIT_PER_ADDRESS": "100000/1m"}})
	lw := &locationWalker{s: s}
	root := apptest.AdminToken
	r := lw.do(t, "POST", "/v1/admin/domains", map[string]string{"name": acme, "locale": "fr"}, root)
	if r.Status != 201 {
		t.Fatalf("create domain: %d %s", r.Status, r.Body)
	}
	// A replayed answer carries its Location too.
	idem := func(path, body, idemKey string) {
		t.Helper()
		for i := range 2 {
			r := send(t, s.Server.URL, path, body, adminWithKey(idemKey))
			if r.Status != 201 || (i == 1) != (r.Header.Get("Idempotent-Replayed") == "true") {
				t.Fatalf("POST %s with Idempotency-Key, #%d: %d %v %s", path, i+1, r.Status, r.Header, r.Body)
			}
			if loc := r.Header.Get("Location"); loc != "" {
				var m map[string]any
				_ = json.Unmarshal(r.Body, &m)
				lw.seen = append(lw.seen, located{route: fmt.Sprintf("POST %s (Idempotency-Key, #%d)", path, i+1), location: loc, key: root, body: m})
			}
		}
	}
	idem("/v1/admin/domains", `{"name":"`+evil+`"}`, "walk-domain")
	password := testkit.Secret(t)
	u := lw.do(t, "POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1001", "email": "a@example.com",
		"first_name": "Ann", "password": password}, root)
	if u.Status != 201 {
		t.Fatalf("create user: %d %s", u.Status, u.Body)
	}
	id := u.Map(t)["id"].(string)
	idem("/v1/admin/users", `{"domain":"`+acme+`","extension":"1002","email":"b@example.com"}`, "walk-user")
	lw.do(t, "POST", "/v1/admin/users", []map[string]any{{"domain": acme, "extension": "1003", "email": "c@example.com"}}, root)
	scoped := scopedKey(t, s, acme)
	lw.do(t, "POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1004", "email": "d@example.com"}, scoped)
	lw.do(t, "PATCH", "/v1/admin/users/"+id, map[string]any{"last_name": "Lee"}, scoped)
	lw.do(t, "POST", "/v1/admin/users/"+id+"/disable", nil, scoped)
	lw.do(t, "POST", "/v1/admin/users/"+id+"/enable", nil, root)
	lw.do(t, "POST", "/v1/admin/users/"+id+"/password-reset", nil, root)
	lw.do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": "a@example.com"}, "")
	lw.do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": strings.Repeat("x", 43)}, "")
	lw.do(t, "POST", "/v1/password/reset", map[string]string{"token": strings.Repeat("x", 43), "new_password": password + "!", "confirm_password": password + "!"}, "")
	login := lw.do(t, "POST", "/v1/login", map[string]string{"login_name": "1001@" + acme, "secret": password}, "")
	session := login.Map(t)["session"].(map[string]any)["token"].(string)
	lw.do(t, "POST", "/v1/logout", nil, session)

	// Three domain answers (one replayed), four single-user answers (one
	// replayed; one the scoped key's); batches answer no Location.
	if len(lw.seen) != 7 {
		t.Fatalf("%d Location headers, want 7: %+v", len(lw.seen), lw.seen)
	}
	for _, l := range lw.seen {
		if !strings.HasPrefix(l.location, "/v1/") {
			t.Errorf("%s: Location %q is not a path of this API", l.route, l.location)
			continue
		}
		g := s.Do(t, "GET", l.location, nil, l.key)
		if g.Status != 200 {
			t.Errorf("%s: GET %s = %d %s", l.route, l.location, g.Status, g.Body)
			continue
		}
		got := g.Map(t)
		if got["id"] != l.body["id"] || !strings.HasSuffix(l.location, "/"+fmt.Sprint(got["id"])) {
			t.Errorf("%s: GET %s is %v, not the resource created (%v)", l.route, l.location, got["id"], l.body["id"])
		}
		if l.body["id"] == id {
			continue // changed since by the PATCH above
		}
		if !reflect.DeepEqual(got, l.body) {
			t.Errorf("%s: GET %s answers\n%v\nthe POST answered\n%v", l.route, l.location, got, l.body)
		}
	}
}

// TestGetUserAndDomain: the representations GET answers, and a key scoped to
// another domain gets for an existing user or domain exactly the answer it
// gets for an unknown or malformed id.
func TestGetUserAndDomain(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	acmeID := createDomain(t, s, acme)
	createDomain(t, s, evil)
	pin := testkit.PIN(t)
	created := s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": acme, "extension": "1001", "email": "a@example.com",
		"first_name": "Ann", "last_name": "Lee", "locale": "fr-ca", "pin": pin})
	if created.Status != 201 {
		t.Fatalf("create: %d %s", created.Status, created.Body)
	}
	id := created.Map(t)["id"].(string)

	r := s.Admin(t, "GET", "/v1/admin/users/"+id, nil)
	if r.Status != 200 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET user: %d %v %s", r.Status, r.Header, r.Body)
	}
	u := r.Map(t)
	if !reflect.DeepEqual(u, created.Map(t)) {
		t.Fatalf("GET user = %v, want the create answer %v", u, created.Map(t))
	}
	if u["password_set"] != false || u["pin_set"] != true || u["status"] != "active" || u["locale"] != "fr-CA" {
		t.Fatalf("user = %v", u)
	}
	if strings.Contains(string(r.Body), pin) || strings.Contains(string(r.Body), "argon2") {
		t.Fatalf("the answer leaks the PIN or its hash: %s", r.Body)
	}
	own := scopedKey(t, s, acme)
	if r := s.Do(t, "GET", "/v1/admin/users/"+id, nil, own); r.Status != 200 {
		t.Fatalf("GET user with its domain's key: %d %s", r.Status, r.Body)
	}
	if r := s.Do(t, "GET", "/v1/admin/domains/"+acmeID, nil, own); r.Status != 200 {
		t.Fatalf("GET domain with its own key: %d %s", r.Status, r.Body)
	}
	d := s.Admin(t, "GET", "/v1/admin/domains/"+acmeID, nil)
	if d.Status != 200 {
		t.Fatalf("GET domain: %d %s", d.Status, d.Body)
	}
	if m := d.Map(t); m["id"] != acmeID || m["name"] != acme || m["locale"] != "en" || m["created_at"] == nil {
		t.Fatalf("domain = %v", m)
	}

	other := scopedKey(t, s, evil)
	unknown := "00000000-0000-4000-8000-000000000000"
	for _, c := range []struct{ path, code string }{{"/v1/admin/users/", "user_not_found"}, {"/v1/admin/domains/", "domain_not_found"}} {
		target := id
		if strings.Contains(c.path, "domains") {
			target = acmeID
		}
		elsewhere := expectProblem(t, s.Do(t, "GET", c.path+target, nil, other), 404, c.code)
		nowhere := expectProblem(t, s.Do(t, "GET", c.path+unknown, nil, other), 404, c.code)
		malformed := expectProblem(t, s.Do(t, "GET", c.path+"not-an-id", nil, other), 404, c.code)
		assertSameProblem(t, elsewhere, nowhere, target, unknown)
		assertSameProblem(t, elsewhere, malformed, target, "not-an-id")
		expectProblem(t, s.Admin(t, "GET", c.path+unknown, nil), 404, c.code)
	}
}

// TestListDomains pages through the domains as GET /v1/admin/users pages
// through users; a scoped key sees only its own domain.
func TestListDomains(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	want := map[string]bool{}
	for i := range 5 {
		want[createDomain(t, s, fmt.Sprintf("d%d.example", i))] = true
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 1; ; pages++ {
		var p struct {
			Items []map[string]any
			Next  string
		}
		r := s.Admin(t, "GET", "/v1/admin/domains?limit=2"+cursor, nil)
		if r.Status != 200 {
			t.Fatalf("page %d: %d %s", pages, r.Status, r.Body)
		}
		r.JSON(t, &p)
		if len(p.Items) > 2 {
			t.Fatalf("page %d has %d domains", pages, len(p.Items))
		}
		for _, d := range p.Items {
			if seen[d["id"].(string)] || d["name"] == "" || d["locale"] != "en" {
				t.Fatalf("page %d: %v", pages, d)
			}
			seen[d["id"].(string)] = true
		}
		if p.Next == "" {
			break
		}
		cursor = "&after=" + p.Next
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("listed %v, want %v", seen, want)
	}

	var own struct{ Items []map[string]any }
	s.Do(t, "GET", "/v1/admin/domains", nil, scopedKey(t, s, "d3.example")).JSON(t, &own)
	if len(own.Items) != 1 || own.Items[0]["name"] != "d3.example" {
		t.Fatalf("a scoped key lists %v", own.Items)
	}
	m := expectProblem(t, s.Admin(t, "GET", "/v1/admin/domains?limit=501&after=nope", nil), 422, "validation_failed")
	if c := fieldCodes(m); c["limit"] != "invalid_limit" || c["after"] != "invalid_cursor" {
		t.Fatalf("errors = %v", m["errors"])
	}
}

// TestResourceRoutesAnswerWrongMethodsAndBadInputAsProblems: the new paths
// say which methods they take, and never answer 500.
func TestResourceRoutesAnswerWrongMethodsAndBadInputAsProblems(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, acme)
	id := createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1001", "email": "a@example.com"})["id"].(string)
	r := s.Admin(t, "DELETE", "/v1/admin/users/"+id, nil)
	expectProblem(t, r, 405, "method_not_allowed")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PATCH") {
		t.Fatalf("Allow = %q", allow)
	}
	for _, b := range []string{``, `null`, `0`, `"x"`, `[]`, `[{}]`, `{"email":null,"extension":null}`, `{"email":{}}`,
		`{"extension":"\u0000"}`, `{"first_name":"` + strings.Repeat("é", 300) + `"}`, "\xff\xfe", `{"locale":"` + strings.Repeat("x", 100) + `"}`} {
		r := s.Admin(t, "PATCH", "/v1/admin/users/"+id, b)
		if r.Status < 400 || r.Status >= 500 || r.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("PATCH %q = %d %s", b, r.Status, r.Body)
		}
	}
	for _, p := range []string{"/v1/admin/users/%00", "/v1/admin/domains/%ff", "/v1/admin/domains?after=%00", "/v1/admin/domains?limit=-1"} {
		if r := s.Admin(t, "GET", p, nil); r.Status < 400 || r.Status >= 500 {
			t.Errorf("GET %s = %d %s", p, r.Status, r.Body)
		}
	}
	if r := s.Do(t, "GET", "/v1/admin/users/"+id, nil, ""); r.Status != 401 {
		t.Fatalf("GET user without a key: %d", r.Status)
	}
}
