package httpapi_test

import (
	"context"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/smtptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

// TestPatchUser: PATCH /v1/admin/users/{id} changes the fields an admin
// changes, with creation's validation, merge-patch semantics, the scoped-key
// rules, and an audit event that names the fields but never their values.
func TestPatchUser(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, acme)
	createDomain(t, s, evil)
	if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "fr.example", "locale": "fr"}); r.Status != 201 {
		t.Fatal(r.Status)
	}
	password := testkit.Secret(t)
	u := createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1001", "email": "a@example.com",
		"first_name": "Ann", "last_name": "Lee", "password": password})
	id, path := u["id"].(string), "/v1/admin/users/"+u["id"].(string)
	createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1002", "email": "b@example.com"})
	createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": evil, "extension": "2001", "email": "c@example.com"})
	session := s.Do(t, "POST", "/v1/login", map[string]string{"login_name": "1001@" + acme, "secret": password}, "").Map(t)["session"].(map[string]any)["token"].(string)

	// Every field at once, canonicalised as at creation; the login name stays.
	r := s.Do(t, "PATCH", path, map[string]any{"first_name": "  Anna ", "last_name": "Li", "email": " Anna@Example.com ",
		"locale": "de-at", "extension": "1003"}, scopedKey(t, s, acme))
	if r.Status != 200 {
		t.Fatalf("patch: %d %s", r.Status, r.Body)
	}
	got := r.Map(t)
	if got["first_name"] != "Anna" || got["last_name"] != "Li" || got["email"] != "Anna@Example.com" || got["locale"] != "de-AT" ||
		got["extension"] != "1003" || got["login_name"] != "1001@"+acme || got["password_set"] != true || got["id"] != id {
		t.Fatalf("patched user = %v", got)
	}
	if g := s.Admin(t, "GET", path, nil).Map(t); !reflect.DeepEqual(g, got) {
		t.Fatalf("GET after PATCH = %v, PATCH answered %v", g, got)
	}
	// Absent fields stay; null clears a name and gives back the domain's
	// locale; "" for the locale does too.
	r = s.Admin(t, "PATCH", path, `{"last_name":null,"locale":null}`)
	if g := r.Map(t); r.Status != 200 || g["last_name"] != "" || g["locale"] != "en" || g["first_name"] != "Anna" || g["email"] != "Anna@Example.com" {
		t.Fatalf("null patch: %d %s", r.Status, r.Body)
	}
	s.Admin(t, "PATCH", path, `{"locale":"fr"}`)
	if g := s.Admin(t, "PATCH", path, `{"locale":""}`).Map(t); g["locale"] != "en" {
		t.Fatalf(`locale "" gives %v, want the domain's`, g["locale"])
	}
	// application/merge-patch+json (RFC 7396) is accepted too; {} changes nothing.
	req, _ := http.NewRequest("PATCH", s.Server.URL+path, strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Authorization", "Bearer "+apptest.AdminToken)
	resp, err := s.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("merge-patch+json: %d", resp.StatusCode)
	}
	// The email is no secret: the session lives on.
	if r := s.Do(t, "GET", "/v1/me", nil, session); r.Status != 200 {
		t.Fatalf("session after the changes: %d %s", r.Status, r.Body)
	}

	// Every field fault at once, in creation's codes.
	m := expectProblem(t, s.Admin(t, "PATCH", path, map[string]any{"first_name": "a\nb", "last_name": strings.Repeat("x", 101),
		"email": "not an email", "locale": "not a locale", "extension": "10 01"}), 422, "validation_failed")
	want := map[string]string{"first_name": "invalid_name", "last_name": "invalid_name", "email": "invalid_email",
		"locale": "invalid_locale", "extension": "invalid_extension"}
	if c := fieldCodes(m); !reflect.DeepEqual(c, want) {
		t.Fatalf("errors = %v", m["errors"])
	}
	m = expectProblem(t, s.Admin(t, "PATCH", path, `{"email":null,"extension":""}`), 422, "validation_failed")
	if c := fieldCodes(m); c["email"] != "required" || c["extension"] != "required" {
		t.Fatalf("errors = %v", m["errors"])
	}
	// Strict decoding, as everywhere: fields that are not the admin's to
	// change here, wrong types and duplicates are named.
	m = expectProblem(t, s.Admin(t, "PATCH", path, `{"login_name":"x","password":"y","domain":"z","email":42,"first_name":"a","first_name":"b"}`), 422, "validation_failed")
	if c := fieldCodes(m); c["login_name"] != "unknown_field" || c["password"] != "unknown_field" || c["domain"] != "unknown_field" ||
		c["email"] != "invalid_type" || c["first_name"] != "duplicate_field" {
		t.Fatalf("errors = %v", m["errors"])
	}
	// The extension is unique within the domain (the code creation uses),
	// not across domains.
	m = expectProblem(t, s.Admin(t, "PATCH", path, map[string]string{"extension": "1002"}), 409, "user_exists")
	if fieldCodes(m)["extension"] != "extension_taken" {
		t.Fatalf("errors = %v", m["errors"])
	}
	if r := s.Admin(t, "PATCH", path, map[string]string{"extension": "2001"}); r.Status != 200 {
		t.Fatalf("an extension of another domain: %d %s", r.Status, r.Body)
	}

	// A key of another domain: the same answers as for a user that does not
	// exist, valid body or not; a malformed id likewise.
	other := scopedKey(t, s, evil)
	unknown := "00000000-0000-4000-8000-000000000000"
	for _, body := range []string{`{"first_name":"Mallory"}`, `{"email":"x"}`} {
		elsewhere := s.Do(t, "PATCH", path, body, other)
		nowhere := s.Do(t, "PATCH", "/v1/admin/users/"+unknown, body, other)
		malformed := s.Do(t, "PATCH", "/v1/admin/users/nope", body, other)
		if elsewhere.Status != nowhere.Status || elsewhere.Status != malformed.Status {
			t.Fatalf("%s: %d, %d, %d", body, elsewhere.Status, nowhere.Status, malformed.Status)
		}
		a, b, c := elsewhere.Map(t), nowhere.Map(t), malformed.Map(t)
		assertSameProblem(t, a, b, id, unknown)
		assertSameProblem(t, a, c, id, "nope")
	}
	expectProblem(t, s.Do(t, "PATCH", path, `{"first_name":"Mallory"}`, other), 404, "user_not_found")
	if g := s.Admin(t, "GET", path, nil).Map(t); g["first_name"] != "Anna" {
		t.Fatalf("another domain's key changed the user: %v", g)
	}

	// Audited: who and which fields, never the values; no-ops and refusals
	// record nothing.
	rows, err := s.DB.Pool.Query(context.Background(), `SELECT actor_kind, actor_id, detail::text FROM audit_events
		WHERE user_id = $1 AND kind = 'account.updated' ORDER BY id`, id)
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	var actors []string
	for rows.Next() {
		var kind, actor, detail string
		if err := rows.Scan(&kind, &actor, &detail); err != nil {
			t.Fatal(err)
		}
		details, actors = append(details, detail), append(actors, kind+":"+actor)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	wantDetails := []string{
		`{"fields": ["first_name", "last_name", "email", "locale", "extension"], "links_revoked": true}`,
		`{"fields": ["last_name", "locale"]}`,
		`{"fields": ["locale"]}`, `{"fields": ["locale"]}`,
		`{"fields": ["extension"]}`,
	}
	if !slices.Equal(details, wantDetails) {
		t.Fatalf("audited\n%s\nwant\n%s", strings.Join(details, "\n"), strings.Join(wantDetails, "\n"))
	}
	if actors[0] == "admin:bootstrap" || !strings.HasPrefix(actors[0], "admin:") || actors[1] != "admin:bootstrap" {
		t.Fatalf("actors = %v", actors)
	}
}

// TestEmailChangeRevokesLinksAndQueuedMail: changing a user's email revokes
// the live reset link (SPEC §3), and a reset email requested before the
// change but not yet sent goes nowhere: before, the mailer sent every
// delivery to the address recorded with it, so the old address got a fresh
// link after the change. The test is the mailer, so it decides when each
// request is handled.
func TestEmailChangeRevokesLinksAndQueuedMail(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Roles: []app.Role{app.RoleTokens}})
	createDomain(t, s, acme)
	password := testkit.Secret(t)
	u := createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1001", "email": "old@example.com",
		"first_name": "Ann", "password": password})
	id, loginName := u["id"].(string), u["login_name"].(string)
	session := s.Do(t, "POST", "/v1/login", map[string]string{"login_name": loginName, "secret": password}, "").Map(t)["session"].(map[string]any)["token"].(string)
	handlers, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	mail := func(e events.Event) {
		t.Helper()
		if errs := handlers[events.TypeMailRequested](context.Background(), []events.Item{{Event: e, Attempt: 1}}); errs[0] != nil {
			t.Fatalf("mail request: %v", errs[0])
		}
	}

	forgotOK(t, s, loginName)
	mail(s.MailRequests(t, 1)[0])
	link := resetTokenIn(t, s.WaitMail(t, 1)[0])
	if r := s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": link}, ""); r.Status != 200 {
		t.Fatalf("inspect before the change: %d %s", r.Status, r.Body)
	}
	forgotOK(t, s, loginName)
	queued := s.MailRequests(t, 2)[1] // decided, not yet sent

	if r := s.Admin(t, "PATCH", "/v1/admin/users/"+id, map[string]string{"email": "new@example.com"}); r.Status != 200 || r.Map(t)["email"] != "new@example.com" {
		t.Fatalf("patch: %d %s", r.Status, r.Body)
	}
	expectProblem(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": link}, ""), 410, "link_expired")
	mail(queued) // returns once its sends have ended
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails: the one requested before the change was sent after it (to %v)", n, s.SMTP.Messages()[n-1].To)
	}
	var status, lastError string
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT status, last_error FROM mail_deliveries
		WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1`, id).Scan(&status, &lastError); err != nil {
		t.Fatal(err)
	}
	if status != "skipped" || !strings.Contains(lastError, "email address changed") {
		t.Fatalf("queued delivery %s (%q), want skipped because the address changed", status, lastError)
	}
	// Not a secret change: the session lives on. A new request goes to the
	// new address, and its link works.
	if r := s.Do(t, "GET", "/v1/me", nil, session); r.Status != 200 {
		t.Fatalf("session after the email change: %d", r.Status)
	}
	forgotOK(t, s, loginName)
	mail(s.MailRequests(t, 3)[2])
	msgs := s.WaitMail(t, 2)
	if !slices.Equal(msgs[0].To, []string{"old@example.com"}) || !slices.Equal(msgs[1].To, []string{"new@example.com"}) {
		t.Fatalf("recipients %v then %v", msgs[0].To, msgs[1].To)
	}
	if r := s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": resetTokenIn(t, msgs[1])}, ""); r.Status != 200 {
		t.Fatalf("the new address's link: %d %s", r.Status, r.Body)
	}
	var detail string
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT detail::text FROM audit_events
		WHERE user_id = $1 AND kind = 'account.updated'`, id).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if detail != `{"fields": ["email"], "links_revoked": true}` {
		t.Fatalf("audit detail %s", detail)
	}
}

// TestEmailChangeWaitsForASendInFlight: an email to the old address is on
// the wire (claimed, its link minted) when the admin changes the address.
// The change cannot recall it, so it is refused (409, Retry-After) until
// the send is out; then it commits and revokes that email's link. Other
// fields change meanwhile. Before, the change committed at once and the
// email still reached the old address after it.
func TestEmailChangeWaitsForASendInFlight(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Roles: []app.Role{app.RoleTokens}})
	createDomain(t, s, acme)
	u := createUserAs(t, s, apptest.AdminToken, map[string]any{"domain": acme, "extension": "1001", "email": "old@example.com"})
	id, path := u["id"].(string), "/v1/admin/users/"+u["id"].(string)
	handlers, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	forgotOK(t, s, u["login_name"].(string))
	e := s.MailRequests(t, 1)[0]
	s.SMTP.SetDelay(3 * time.Second)
	done := make(chan error, 1)
	go func() {
		done <- handlers[events.TypeMailRequested](context.Background(), []events.Item{{Event: e, Attempt: 1}})[0]
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var status string
		if err := s.DB.Pool.QueryRow(context.Background(), `SELECT status FROM mail_deliveries WHERE user_id = $1`, id).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status == "sending" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the delivery is %s, never sending", status)
		}
		time.Sleep(10 * time.Millisecond)
	}

	r := s.Admin(t, "PATCH", path, map[string]string{"email": "new@example.com"})
	expectProblem(t, r, 409, "delivery_in_progress")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("409 without Retry-After")
	}
	if r := s.Admin(t, "PATCH", path, map[string]string{"first_name": "Ann"}); r.Status != 200 {
		t.Fatalf("a name change while sending: %d %s", r.Status, r.Body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the send did not end")
	}
	msg := s.WaitMail(t, 1)[0]
	if r := s.Admin(t, "PATCH", path, map[string]string{"email": "new@example.com"}); r.Status != 200 {
		t.Fatalf("patch once the send is out: %d %s", r.Status, r.Body)
	}
	expectProblem(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": resetTokenIn(t, msg)}, ""), 410, "link_expired")
}

func forgotOK(t *testing.T, s *apptest.Stack, identifier string) {
	t.Helper()
	if r := s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": identifier}, ""); r.Status != 202 {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
}

var resetTokenRE = regexp.MustCompile(regexp.QuoteMeta(apptest.PublicBaseURL) + `/reset\?token=([A-Za-z0-9_-]+)`)

func resetTokenIn(t *testing.T, m smtptest.Message) string {
	t.Helper()
	p, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	match := resetTokenRE.FindStringSubmatch(p.Text)
	if match == nil {
		t.Fatalf("no reset link in:\n%s", p.Text)
	}
	return match[1]
}
