package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

func expectProblem(t *testing.T, r apptest.Response, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	m := r.Map(t)
	if m["code"] != code || m["status"] != float64(status) || m["type"] == "" || m["title"] == "" {
		t.Fatalf("problem = %v, want code %q", m, code)
	}
	return m
}

// assertSameProblem fails unless two problem bodies are equal once the
// request ids are dropped and each names its own input the same way.
func assertSameProblem(t *testing.T, a, b map[string]any, nameA, nameB string) {
	t.Helper()
	delete(a, "request_id")
	delete(b, "request_id")
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if strings.ReplaceAll(string(ja), nameA, "X") != strings.ReplaceAll(string(jb), nameB, "X") {
		t.Fatalf("the answers differ:\n%s\n%s", ja, jb)
	}
}

func fieldCodes(m map[string]any) map[string]string {
	out := map[string]string{}
	list, _ := m["errors"].([]any)
	for _, e := range list {
		fe := e.(map[string]any)
		out[fe["field"].(string)] = fe["code"].(string)
	}
	return out
}

func createDomain(t *testing.T, s *apptest.Stack, name string) string {
	t.Helper()
	r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": name})
	if r.Status != http.StatusCreated {
		t.Fatalf("create domain %s: %d %s", name, r.Status, r.Body)
	}
	return r.Map(t)["id"].(string)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	if r := s.Do(t, "GET", "/healthz", nil, ""); r.Status != 200 {
		t.Fatalf("healthz = %d", r.Status)
	}
	r := s.Do(t, "GET", "/readyz", nil, "")
	m := r.Map(t)
	checks, _ := m["checks"].(map[string]any)
	if r.Status != 200 || checks["database"] != "ok" || checks["nats"] != "ok" {
		t.Fatalf("readyz = %d %s", r.Status, r.Body)
	}
	if id := r.Header.Get("X-Request-Id"); id == "" {
		t.Fatal("no X-Request-Id on the answer")
	}
	r = s.Do(t, "GET", "/metrics", nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Body), `latchkey_http_requests_total{code="200",method="GET",route="GET /readyz"}`) {
		t.Fatalf("metrics lack the request counter: %d\n%.2000s", r.Status, r.Body)
	}
}

func TestReadinessFailsWhenDatabaseIsGone(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	s.App.Store.Pool().Close()
	r := s.Do(t, "GET", "/readyz", nil, "")
	if r.Status != http.StatusServiceUnavailable || r.Map(t)["checks"].(map[string]any)["database"] != "unavailable" {
		t.Fatalf("readyz with the pool closed = %d %s", r.Status, r.Body)
	}
}

func TestAdminAuthentication(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	r := s.Do(t, "POST", "/v1/admin/domains", map[string]string{"name": "acme.11111.service"}, "")
	expectProblem(t, r, 401, "unauthorized")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
	}
	expectProblem(t, s.Do(t, "GET", "/v1/admin/users", nil, "not-the-token"), 401, "unauthorized")
	expectProblem(t, s.Do(t, "GET", "/v1/admin/users", nil, "lk_admin_forged"), 401, "unauthorized")

	// A key from `latchkey admin-key create` works; one scoped to a domain
	// sees only that domain.
	createDomain(t, s, "acme.11111.service")
	createDomain(t, s, "other.22222.service")
	global, _, err := adminkeys.Create(context.Background(), s.App.Store, "ops", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Do(t, "GET", "/v1/admin/users", nil, global); r.Status != 200 {
		t.Fatalf("global key: %d %s", r.Status, r.Body)
	}
	scoped, _, err := adminkeys.Create(context.Background(), s.App.Store, "acme admin", "acme.11111.service")
	if err != nil {
		t.Fatal(err)
	}
	user := map[string]any{"domain": "acme.11111.service", "extension": "1001", "email": "a@example.com"}
	if r := s.Do(t, "POST", "/v1/admin/users", user, scoped); r.Status != 201 {
		t.Fatalf("scoped key in its domain: %d %s", r.Status, r.Body)
	}
	// Another domain answers exactly as a domain that does not exist: a
	// scoped key must not learn which other tenants there are.
	user["domain"] = "other.22222.service"
	elsewhere := expectProblem(t, s.Do(t, "POST", "/v1/admin/users", user, scoped), 422, "validation_failed")
	user["domain"] = "nowhere.22222.service"
	nowhere := expectProblem(t, s.Do(t, "POST", "/v1/admin/users", user, scoped), 422, "validation_failed")
	assertSameProblem(t, elsewhere, nowhere, "other.22222.service", "nowhere.22222.service")
	elsewhere = expectProblem(t, s.Do(t, "GET", "/v1/admin/users?domain=other.22222.service", nil, scoped), 404, "domain_not_found")
	nowhere = expectProblem(t, s.Do(t, "GET", "/v1/admin/users?domain=nowhere.22222.service", nil, scoped), 404, "domain_not_found")
	assertSameProblem(t, elsewhere, nowhere, "other.22222.service", "nowhere.22222.service")
	// Operations that span every domain are refused outright, saying so
	// (before, "limited to another domain", which named no domain and
	// suggested the right domain would do).
	for _, m := range []map[string]any{
		expectProblem(t, s.Do(t, "POST", "/v1/admin/domains", map[string]string{"name": "x.service"}, scoped), 403, "forbidden"),
		expectProblem(t, s.Do(t, "GET", "/v1/admin/dead-letters", nil, scoped), 403, "forbidden"),
	} {
		if d, _ := m["detail"].(string); !strings.Contains(d, "spans every domain") || strings.Contains(d, "another domain") {
			t.Errorf("403 detail = %q", d)
		}
	}
	// Without a domain filter a scoped key lists its own domain only.
	var page struct{ Items []map[string]any }
	s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "other.22222.service", "extension": "1001", "email": "b@example.com"})
	s.Do(t, "GET", "/v1/admin/users", nil, scoped).JSON(t, &page)
	if len(page.Items) != 1 || page.Items[0]["domain"] != "acme.11111.service" {
		t.Fatalf("scoped listing = %v", page.Items)
	}
}

func TestCreateDomain(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "Acme.11111.Service", "locale": "fr-ca"})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	m := r.Map(t)
	if m["id"] == "" || m["name"] != "acme.11111.service" || m["locale"] != "fr-CA" {
		t.Fatalf("domain = %v", m)
	}
	if !strings.HasPrefix(r.Header.Get("Location"), "/v1/admin/domains/") {
		t.Fatalf("Location = %q", r.Header.Get("Location"))
	}
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "ACME.11111.service"}), 409, "domain_exists")
	// A domain's own users are not "users of other domains" in its namespace:
	// creating it again is still domain_exists.
	s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "acme.11111.service", "extension": "1001", "email": "a@example.com"})
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "acme.11111.service"}), 409, "domain_exists")

	cases := []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"empty name", map[string]string{"name": ""}, 422, "validation_failed", "name"},
		{"spaces", map[string]string{"name": "acme corp"}, 422, "validation_failed", "name"},
		{"header injection", map[string]string{"name": "acme\r\nBcc: x@evil"}, 422, "validation_failed", "name"},
		{"bad locale", map[string]string{"name": "ok.service", "locale": "not a locale"}, 422, "validation_failed", "locale"},
		{"name as array", `{"name":["a","b"]}`, 422, "validation_failed", "name"},
		{"name as number", `{"name":42}`, 422, "validation_failed", "name"},
		{"unknown field", `{"name":"ok.service","admin":true}`, 422, "validation_failed", "admin"},
		{"not JSON", `{"name":`, 400, "invalid_json", ""},
		{"garbage", `<xml/>`, 400, "invalid_json", ""},
		{"empty body", ``, 400, "invalid_json", ""},
		{"array body", `[]`, 400, "invalid_json", ""},
		{"two values", `{"name":"a.service"}{"name":"b.service"}`, 400, "invalid_json", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/domains", c.body), c.status, c.code)
			if c.field != "" {
				if _, ok := fieldCodes(m)[c.field]; !ok {
					t.Fatalf("errors %v do not name %q", m["errors"], c.field)
				}
			}
		})
	}
}

func TestBodyLimitsAndMediaType(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	big := `{"name":"` + strings.Repeat("a", 70<<10) + `"}`
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/domains", big), 413, "body_too_large")

	req, _ := http.NewRequest("POST", s.Server.URL+"/v1/admin/domains", strings.NewReader(`name=x`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+apptest.AdminToken)
	resp, err := s.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 415 {
		t.Fatalf("form body: %d, want 415", resp.StatusCode)
	}
}

func TestUnknownRouteAndWrongMethodAreProblems(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	expectProblem(t, s.Do(t, "GET", "/v1/nothing-here", nil, ""), 404, "not_found")
	r := s.Do(t, "DELETE", "/v1/admin/domains", nil, apptest.AdminToken)
	expectProblem(t, r, 405, "method_not_allowed")
	if !strings.Contains(r.Header.Get("Allow"), "POST") {
		t.Fatalf("Allow = %q", r.Header.Get("Allow"))
	}
}

func TestCreateUsers(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	createDomain(t, s, "abc-company.11111.service")

	// Secrets random per run and too long to occur by chance in an answer:
	// a fixed 4-digit PIN turned up inside a random UUID once in ~2,000 runs.
	pin, password := testkit.PIN(t), testkit.Secret(t)
	r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": "1001", "email": "first.last@gmail.com",
		"first_name": "Jason", "last_name": "Lord", "pin": pin, "password": password,
	})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	u := r.Map(t)
	if u["id"] == "" || u["login_name"] != "1001@acme.11111.service" || u["password_set"] != true ||
		u["pin_set"] != true || u["locale"] != "en" || u["domain"] != "acme.11111.service" {
		t.Fatalf("user = %v", u)
	}
	if strings.Contains(string(r.Body), pin) || strings.Contains(string(r.Body), password) || strings.Contains(string(r.Body), "argon2") {
		t.Fatalf("the answer leaks a secret or its hash: %s", r.Body)
	}

	// The same email and extension in another domain is allowed (the
	// collision case of "forgot login name"); in the same domain it is not.
	r = s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "abc-company.11111.service", "extension": "1001", "email": "first.last@gmail.com"})
	if r.Status != 201 {
		t.Fatalf("same email in another domain: %d %s", r.Status, r.Body)
	}
	m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": "1001", "email": "x@example.com", "login_name": "someone.else",
	}), 409, "user_exists")
	if fieldCodes(m)["extension"] != "extension_taken" {
		t.Fatalf("errors = %v", m["errors"])
	}
	m = expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": "1002", "email": "x@example.com", "login_name": "1001@ACME.11111.service",
	}), 409, "user_exists")
	if fieldCodes(m)["login_name"] != "login_name_taken" {
		t.Fatalf("login names must be unique regardless of case: %v", m["errors"])
	}

	m = expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "nowhere.service", "extension": "", "email": "not-an-email", "first_name": "Eve\r\nBcc: x@evil",
		"pin": "1234", "password": "short", "locale": "??",
	}), 422, "validation_failed")
	want := map[string]string{
		"domain": "domain_not_found", "extension": "required", "email": "invalid_email", "first_name": "invalid_name",
		"pin": "pin_blacklisted", "password": "password_length", "locale": "invalid_locale",
	}
	got := fieldCodes(m)
	for field, code := range want {
		if got[field] != code {
			t.Errorf("field %s: code %q, want %q (all: %v)", field, got[field], code, got)
		}
	}
	for _, e := range m["errors"].([]any) {
		fe := e.(map[string]any)
		if fe["field"] == "password" && fe["detail"] != "New password must be between 8 and 64 characters long." {
			t.Errorf("password detail = %q", fe["detail"])
		}
	}
	for _, pin := range []string{"1111", "4321", "1001", "12a4", "123"} {
		r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "acme.11111.service", "extension": "1001x", "email": "p@example.com", "pin": pin})
		if r.Status != 422 {
			t.Errorf("pin %q accepted: %d %s", pin, r.Status, r.Body)
		}
	}
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": "1003", "email": "c@example.com", "password": "password1",
	}), 422, "validation_failed")
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", `{"domain":"acme.11111.service","extension":["1001"],"email":"a@b.c"}`), 422, "validation_failed")
}

func TestImportUsersIsAllOrNothing(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	batch := []map[string]any{
		{"domain": "acme.11111.service", "extension": "2001", "email": "a@example.com", "locale": "fr-CA"},
		{"domain": "acme.11111.service", "extension": "2002", "email": "b@example.com"},
	}
	r := s.Admin(t, "POST", "/v1/admin/users", batch)
	if r.Status != 201 {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	var out []map[string]any
	r.JSON(t, &out)
	if len(out) != 2 || out[0]["login_name"] != "2001@acme.11111.service" || out[0]["locale"] != "fr-CA" {
		t.Fatalf("import answer = %v", out)
	}

	bad := []map[string]any{
		{"domain": "acme.11111.service", "extension": "3001", "email": "ok@example.com"},
		{"domain": "acme.11111.service", "extension": "3002", "email": "broken"},
		{"domain": "acme.11111.service", "extension": "3001", "email": "dup@example.com"},
	}
	m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", bad), 422, "validation_failed")
	codes := fieldCodes(m)
	if codes["[1].email"] != "invalid_email" || codes["[2].extension"] != "duplicate_in_request" {
		t.Fatalf("errors = %v", m["errors"])
	}
	// A conflict with an existing user rolls back the whole import.
	conflict := []map[string]any{
		{"domain": "acme.11111.service", "extension": "4001", "email": "new@example.com"},
		{"domain": "acme.11111.service", "extension": "2001", "email": "again@example.com"},
	}
	m = expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", conflict), 409, "user_exists")
	if fieldCodes(m)["[1].extension"] != "extension_taken" {
		t.Fatalf("errors = %v", m["errors"])
	}
	var page struct{ Items []map[string]any }
	s.Admin(t, "GET", "/v1/admin/users?domain=acme.11111.service", nil).JSON(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("after the failed imports the domain has %d users, want 2", len(page.Items))
	}
	expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", `[]`), 422, "empty_import")
}

func TestListUsers(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	createDomain(t, s, "other.service")
	var batch []map[string]any
	for i := range 5 {
		u := map[string]any{"domain": "acme.11111.service", "extension": fmt.Sprint(5000 + i), "email": fmt.Sprintf("u%d@example.com", i)}
		if i%2 == 0 {
			u["password"] = "a sufficiently long passphrase"
		}
		batch = append(batch, u)
	}
	batch = append(batch, map[string]any{"domain": "other.service", "extension": "1", "email": "o@example.com"})
	if r := s.Admin(t, "POST", "/v1/admin/users", batch); r.Status != 201 {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	type page struct {
		Items []map[string]any
		Next  string
	}
	var p page
	s.Admin(t, "GET", "/v1/admin/users?domain=acme.11111.service&password_set=false", nil).JSON(t, &p)
	if len(p.Items) != 2 {
		t.Fatalf("password_set=false: %d users, want 2", len(p.Items))
	}
	for _, u := range p.Items {
		if u["password_set"] != false {
			t.Fatalf("filtered user has a password: %v", u)
		}
	}
	// Paging walks every user exactly once.
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		var p page
		s.Admin(t, "GET", "/v1/admin/users?limit=2"+cursor, nil).JSON(t, &p)
		for _, u := range p.Items {
			if seen[u["id"].(string)] {
				t.Fatalf("user %v listed twice", u["id"])
			}
			seen[u["id"].(string)] = true
		}
		if p.Next == "" {
			break
		}
		cursor = "&after=" + p.Next
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 6 {
		t.Fatalf("paged through %d users, want 6", len(seen))
	}
	m := expectProblem(t, s.Admin(t, "GET", "/v1/admin/users?password_set=maybe&limit=0&after=x", nil), 422, "validation_failed")
	if c := fieldCodes(m); c["password_set"] == "" || c["limit"] == "" || c["after"] == "" {
		t.Fatalf("errors = %v", m["errors"])
	}
	expectProblem(t, s.Admin(t, "GET", "/v1/admin/users?domain=nope.service", nil), 404, "domain_not_found")
}

// TestEventPastMaxDeliverIsListedAsDeadLetter drives the whole path: a worker
// fails an event on every attempt, the runner gives up after MaxDeliver, and
// the admin API lists the dead letter.
func TestEventPastMaxDeliverIsListedAsDeadLetter(t *testing.T) {
	failing := func(context.Context, events.Event) error { return errors.New("smtp: 421 4.3.0 try later") }
	s := apptest.Start(t, apptest.Options{
		Env:      map[string]string{"EVENT_MAX_DELIVER": "2"},
		Roles:    []app.Role{app.RoleMailer},
		Handlers: app.Handlers{events.TypeMailRequested: events.One(failing)},
	})
	e, err := events.New("test", events.TypeMailRequested, "", map[string]string{"template": "welcome"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.NewPublisher(s.App.JS).Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	var list struct{ Items []map[string]any }
	deadline := time.Now().Add(20 * time.Second)
	for len(list.Items) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter listed")
		}
		time.Sleep(50 * time.Millisecond)
		s.Admin(t, "GET", "/v1/admin/dead-letters", nil).JSON(t, &list)
	}
	d := list.Items[0]
	if d["type"] != events.TypeMailRequested || d["attempts"] != float64(2) || d["event_id"] != e.ID ||
		!strings.Contains(d["reason"].(string), "421 4.3.0 try later") || d["consumer"] != "mailer" {
		t.Fatalf("dead letter = %v", d)
	}
}

// TestBadInputNeverAnswers500 throws malformed requests at every admin
// endpoint: each must be a 4xx problem.
func TestBadInputNeverAnswers500(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	bodies := []string{``, `null`, `0`, `"x"`, `[null]`, `[1,2]`, `{"domain":null}`, `{"domain":{}}`,
		`{"extension":"\u0000"}`, `{"email":"a@b.c","domain":"acme.11111.service","extension":"1","pin":1234}`,
		`{"name":"` + strings.Repeat("é", 300) + `"}`, `{"login_name":"` + strings.Repeat("x", 300) + `"}`, "\xff\xfe"}
	for _, path := range []string{"/v1/admin/domains", "/v1/admin/users"} {
		for _, b := range bodies {
			r := s.Admin(t, "POST", path, b)
			if r.Status < 400 || r.Status >= 500 || r.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("POST %s %q = %d %s", path, b, r.Status, r.Body)
			}
		}
	}
	for _, q := range []string{"?limit=-1", "?limit=99999", "?after=%00", "?password_set=", "?domain=%ff"} {
		r := s.Admin(t, "GET", "/v1/admin/users"+q, nil)
		if r.Status >= 500 {
			t.Errorf("GET users%s = %d %s", q, r.Status, r.Body)
		}
	}
}
