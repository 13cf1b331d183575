package httpapi

import (
	"bytes"
	"net/http"
	"testing"
)

// The record's lookup depends on scope, route and key only; the
// fingerprint on every part of the request too; and an answer sealed for
// one request opens for that request alone.
func TestIdempotentRequestDerivations(t *testing.T) {
	t.Parallel()
	base := func() idempotentRequest {
		return newIdempotentRequest("client:192.0.2.1", "POST /v1/password/reset", "k1", "POST", "/v1/password/reset", []byte(`{"token":"t"}`))
	}
	a := base()
	variants := map[string]idempotentRequest{
		"scope": newIdempotentRequest("client:192.0.2.2", "POST /v1/password/reset", "k1", "POST", "/v1/password/reset", []byte(`{"token":"t"}`)),
		"route": newIdempotentRequest("client:192.0.2.1", "POST /v1/password/forgot", "k1", "POST", "/v1/password/reset", []byte(`{"token":"t"}`)),
		"key":   newIdempotentRequest("client:192.0.2.1", "POST /v1/password/reset", "k2", "POST", "/v1/password/reset", []byte(`{"token":"t"}`)),
		"path":  newIdempotentRequest("client:192.0.2.1", "POST /v1/password/reset", "k1", "POST", "/v1/password/reset/", []byte(`{"token":"t"}`)),
		"body":  newIdempotentRequest("client:192.0.2.1", "POST /v1/password/reset", "k1", "POST", "/v1/password/reset", []byte(`{"token":"u"}`)),
		// The separators keep parts from sliding into one another.
		"split": newIdempotentRequest("client:192.0.2.1", "POST /v1/password/reset", "k", "1POST", "/v1/password/reset", []byte(`{"token":"t"}`)),
	}
	if b := base(); !bytes.Equal(a.lookup, b.lookup) || !bytes.Equal(a.fingerprint, b.fingerprint) {
		t.Fatal("the same request derives differently")
	}
	sealed, err := a.seal(answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"session":"s"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(`"session"`)) {
		t.Fatal("the sealed answer holds the body in clear")
	}
	got, err := base().open(sealed)
	if err != nil || got.Status != 200 || string(got.Body) != `{"session":"s"}` || got.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("open = %+v, %v", got, err)
	}
	for name, v := range variants {
		sameLookup := bytes.Equal(v.lookup, a.lookup)
		if wantSame := name == "path" || name == "body"; sameLookup != wantSame {
			t.Errorf("%s: same lookup = %v", name, sameLookup)
		}
		if bytes.Equal(v.fingerprint, a.fingerprint) {
			t.Errorf("%s: same fingerprint", name)
		}
		if _, err := v.open(sealed); err == nil {
			t.Errorf("%s: opens another request's answer", name)
		}
	}
}

func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status int
		fresh  bool
		want   outcome
	}{
		{200, true, outcomeKeep}, {201, false, outcomeKeep}, {202, true, outcomeKeep}, {204, true, outcomeKeep},
		{400, true, outcomeForget}, {404, true, outcomeForget}, {409, true, outcomeForget}, {410, true, outcomeForget}, {422, true, outcomeForget},
		{422, false, outcomeRelease}, // an earlier try may have had an effect
		{408, true, outcomeRelease}, {429, true, outcomeRelease}, {499, true, outcomeRelease},
		{500, true, outcomeRelease}, {503, true, outcomeRelease},
	} {
		if got := outcomeOf(c.status, c.fresh); got != c.want {
			t.Errorf("outcomeOf(%d, fresh %v) = %d, want %d", c.status, c.fresh, got, c.want)
		}
	}
}

func TestIdempotencyKeyFormat(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		values []string
		ok     bool
	}{
		{[]string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, true},
		{[]string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, true},
		{[]string{string(bytes.Repeat([]byte("k"), 255))}, true},
		{[]string{string(bytes.Repeat([]byte("k"), 256))}, false},
		{[]string{""}, false},
		{[]string{"a b"}, false},
		{[]string{"a\tb"}, false},
		{[]string{"clé"}, false},
		{[]string{"a", "a"}, false},
	} {
		if _, ok := idempotencyKey(c.values); ok != c.ok {
			t.Errorf("idempotencyKey(%q) ok = %v, want %v", c.values, ok, c.ok)
		}
	}
}
