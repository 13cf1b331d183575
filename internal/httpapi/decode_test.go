package httpapi

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/problem"
)

type forgotBody struct {
	Identifier string `json:"identifier"`
}

func asProblem(t *testing.T, err error) *problem.Problem {
	t.Helper()
	var p *problem.Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T) is not a problem", err, err)
	}
	return p
}

func TestDecodeStrictAcceptsExactBodies(t *testing.T) {
	var in forgotBody
	if err := decodeStrict([]byte(" {\"identifier\" : \"a@x.example\"}\n"), &in); err != nil {
		t.Fatal(err)
	}
	if in.Identifier != "a@x.example" {
		t.Fatalf("identifier = %q", in.Identifier)
	}
	var users []accounts.UserInput
	if err := decodeStrict([]byte(`[{"email":"a@x.example","pin":null},{"email":"b@x.example","pin":"1234"}]`), &users); err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0].PIN != nil || users[1].PIN == nil || *users[1].PIN != "1234" {
		t.Fatalf("users = %+v", users)
	}
}

// The body as a whole is wrong: 400 invalid_json, no field list.
func TestDecodeStrictRefusesWrongBodies(t *testing.T) {
	cases := []struct{ name, body string }{
		{"null", `null`},
		{"null with spaces", " \n null \t"},
		{"string", `"a@x.example"`},
		{"number", `42`},
		{"boolean", `true`},
		{"array for an object", `[{"identifier":"a@x.example"}]`},
		{"truncated", `{"identifier":`},
		{"not JSON", `{identifier:"a"}`},
		{"two values", `{"identifier":"a@x.example"}{"identifier":"b@x.example"}`},
		{"value then garbage", `{"identifier":"a@x.example"} x`},
		{"invalid UTF-8", "{\"identifier\":\"a\xff@x.example\"}"},
		{"unknown field then truncation", `{"x":1,"identifier":`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var in forgotBody
			p := asProblem(t, decodeStrict([]byte(c.body), &in))
			if p.Status != 400 || p.Code != "invalid_json" || len(p.Errors) != 0 {
				t.Fatalf("problem = %+v", p)
			}
		})
	}
	var users []accounts.UserInput
	for _, body := range []string{`null`, `{"email":"a@x.example"}`} {
		p := asProblem(t, decodeStrict([]byte(body), &users))
		if p.Status != 400 || p.Code != "invalid_json" {
			t.Fatalf("%s into an array: %+v", body, p)
		}
	}
}

// Member faults: 422 listing every one, in document order.
func TestDecodeStrictListsEveryFieldFault(t *testing.T) {
	cases := []struct {
		name string
		body string
		into any
		want []problem.FieldError
	}{
		{"duplicate", `{"identifier":"a@x.example","identifier":"b@x.example"}`, &forgotBody{},
			[]problem.FieldError{{Field: "identifier", Code: "duplicate_field"}}},
		{"duplicate spelled with an escape", `{"identifier":"a@x.example","\u0069dentifier":"b@x.example"}`, &forgotBody{},
			[]problem.FieldError{{Field: "identifier", Code: "duplicate_field"}}},
		{"name in another case", `{"identifier":"a@x.example","IDENTIFIER":"b@x.example"}`, &forgotBody{},
			[]problem.FieldError{{Field: "IDENTIFIER", Code: "unknown_field"}}},
		{"two unknown and one wrong type",
			`{"domain":"acme.example","admin":true,"email":["a@x.example"],"role":"owner"}`, &accounts.UserInput{},
			[]problem.FieldError{{Field: "admin", Code: "unknown_field"}, {Field: "email", Code: "invalid_type"},
				{Field: "role", Code: "unknown_field"}}},
		{"every wrong type", `{"domain":1,"pin":1234,"password":{},"extension":null}`, &accounts.UserInput{},
			[]problem.FieldError{{Field: "domain", Code: "invalid_type"}, {Field: "pin", Code: "invalid_type"},
				{Field: "password", Code: "invalid_type"}}},
		{"unknown field named with digits", `{"0":1}`, &forgotBody{},
			[]problem.FieldError{{Field: "0", Code: "unknown_field"}}},
		{"import entries", `[{"email":"a@x.example"},{"email":"b@x.example","email":"c@x.example","pin":5},"x",{"mail":"d"}]`,
			&[]accounts.UserInput{},
			[]problem.FieldError{{Field: "[1].email", Code: "duplicate_field"}, {Field: "[1].pin", Code: "invalid_type"},
				{Field: "[2]", Code: "invalid_type"}, {Field: "[3].mail", Code: "unknown_field"}}},
		{"duplicate inside a wrongly typed value", `{"identifier":{"a":1,"a":2}}`, &forgotBody{},
			[]problem.FieldError{{Field: "identifier.a", Code: "duplicate_field"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := asProblem(t, decodeStrict([]byte(c.body), c.into))
			if p.Status != 422 || p.Code != "validation_failed" {
				t.Fatalf("problem = %+v", p)
			}
			got := make([]problem.FieldError, len(p.Errors))
			for i, e := range p.Errors {
				if e.Detail == "" {
					t.Errorf("%s: no detail", e.Field)
				}
				got[i] = problem.FieldError{Field: e.Field, Code: e.Code}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("errors = %+v\nwant     %+v", p.Errors, c.want)
			}
		})
	}
}

func TestDecodeStrictTypeDetail(t *testing.T) {
	p := asProblem(t, decodeStrict([]byte(`{"identifier":["a","b"]}`), &forgotBody{}))
	if len(p.Errors) != 1 || p.Errors[0].Detail != "identifier must be a string, not an array." {
		t.Fatalf("errors = %+v", p.Errors)
	}
}

// FuzzDecodeStrict checks that any body either decodes or is refused with a
// 400, or a 422 that names at least one field: never a panic, never a
// refusal without a reason.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{`{"identifier":"a"}`, `null`, `[{"email":"a","email":"b"}]`, `{"pin":1,"x":2}`,
		`{"a":`, `[1,{"domain":{"a":1,"a":2}}]`, `{"\u0000":""}`, "{\"email\":\"\xff\"}", `[null,[],{}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, into := range []any{&forgotBody{}, &accounts.UserInput{}, &[]accounts.UserInput{}} {
			err := decodeStrict(body, into)
			if err == nil {
				continue
			}
			p := asProblem(t, err)
			switch {
			case p.Status == 400 && len(p.Errors) == 0:
			case p.Status == 422 && len(p.Errors) > 0:
			default:
				t.Fatalf("%q: problem %+v", body, p)
			}
		}
	})
}

// A body with more faults than anyone reads is listed up to a bound, so a
// refused body costs no more than a bounded walk.
func TestDecodeStrictBoundsTheList(t *testing.T) {
	body := []byte{'{'}
	for i := range maxFieldFaults + 50 {
		body = fmt.Appendf(body, `"a%d":0,`, i)
	}
	body = append(body, `"identifier":"a@x.example"}`...)
	p := asProblem(t, decodeStrict(body, &forgotBody{}))
	if p.Status != 422 || len(p.Errors) != maxFieldFaults || p.Errors[maxFieldFaults-1].Field != fmt.Sprintf("a%d", maxFieldFaults-1) ||
		!strings.Contains(p.Detail, "first 100") {
		t.Fatalf("problem: %d %q, %d errors", p.Status, p.Detail, len(p.Errors))
	}
}
