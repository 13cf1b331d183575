package httpapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/apptest"
)

// Duplicate member names are refused (encoding/json v1 let the last one win,
// so {"identifier":"a","identifier":"b"} mailed b), and nothing is
// published for the refused request.
func TestDuplicateNamesAreRefusedAndNothingIsPublished(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"DISCLOSURE": "uniform"}})
	ctx := context.Background()
	published := func() uint64 {
		t.Helper()
		info, err := s.App.Stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before := published()
	for _, body := range []string{
		`{"identifier":"a@x.example","identifier":"b@x.example"}`,
		`{"identifier":"a@x.example","\u0069dentifier":"b@x.example"}`,
		`{"identifier":"a@x.example","Identifier":"b@x.example"}`,
	} {
		r := s.Do(t, "POST", "/v1/password/forgot", body, "")
		m := expectProblem(t, r, 422, "validation_failed")
		if codes := fieldCodes(m); len(codes) != 1 || (codes["identifier"] != "duplicate_field" && codes["Identifier"] != "unknown_field") {
			t.Errorf("%s: errors %v", body, m["errors"])
		}
	}
	if n := published(); n != before {
		t.Fatalf("%d events published for refused requests", n-before)
	}
	// The same request without the second name is published: the check above
	// can fail.
	if r := s.Do(t, "POST", "/v1/password/forgot", `{"identifier":"a@x.example"}`, ""); r.Status != 202 {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
	if n := published(); n != before+1 {
		t.Fatalf("%d events published, want 1", n-before)
	}

	m := expectProblem(t, s.Do(t, "POST", "/v1/login", `{"login_name":"a","secret":"x","login_name":"b"}`, ""), 422, "validation_failed")
	if fieldCodes(m)["login_name"] != "duplicate_field" {
		t.Errorf("login: errors %v", m["errors"])
	}
}

// A duplicate inside one entry of a user import names that entry, and the
// import stores nobody.
func TestDuplicateNameInImportEntry(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	body := `[{"domain":"acme.11111.service","extension":"1001","email":"a@x.example"},` +
		`{"domain":"acme.11111.service","extension":"1002","email":"b@x.example","email":"c@x.example"}]`
	m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", body), 422, "validation_failed")
	if codes := fieldCodes(m); len(codes) != 1 || codes["[1].email"] != "duplicate_field" {
		t.Fatalf("errors %v", m["errors"])
	}
	var list struct{ Items []any }
	s.Admin(t, "GET", "/v1/admin/users", nil).JSON(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("%d users stored", len(list.Items))
	}
}

// null is not an object: 400 on every route that takes a body.
func TestNullBodyIsBadRequest(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	for _, path := range []string{"/v1/password/forgot", "/v1/tokens/inspect", "/v1/password/reset", "/v1/login",
		"/v1/admin/domains", "/v1/admin/users"} {
		for _, body := range []string{`null`, ` null `} {
			m := expectProblem(t, s.Admin(t, "POST", path, body), 400, "invalid_json")
			if !strings.Contains(fmt.Sprint(m["detail"]), "null") {
				t.Errorf("POST %s %q: detail %q", path, body, m["detail"])
			}
		}
	}
}

// Every unknown and every wrongly typed field is in one answer, as the
// README promises.
func TestEveryFieldFaultAtOnce(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	body := `{"domain":"acme.11111.service","extension":"1001","emial":"a@x.example","first_name":["Jo"],"admin":true}`
	m := expectProblem(t, s.Admin(t, "POST", "/v1/admin/users", body), 422, "validation_failed")
	want := map[string]string{"emial": "unknown_field", "first_name": "invalid_type", "admin": "unknown_field"}
	if got := fieldCodes(m); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("errors %v, want %v", m["errors"], want)
	}
	m = expectProblem(t, s.Do(t, "POST", "/v1/password/reset",
		`{"token":1,"new_password":"a long passphrase 1","confirm":"x","confirm_password":false}`, ""), 422, "validation_failed")
	want = map[string]string{"token": "invalid_type", "confirm": "unknown_field", "confirm_password": "invalid_type"}
	if got := fieldCodes(m); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reset: errors %v, want %v", m["errors"], want)
	}
}
