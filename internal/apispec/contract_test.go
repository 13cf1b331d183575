package apispec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/latchkey/latchkey/internal/apispec"
)

// contract is an http.RoundTripper that holds every request a test sends,
// and every answer it gets, against the OpenAPI document:
//
//   - a request the document describes is validated (parameters, headers,
//     body, security); one the document refuses must be refused by the
//     server too (4xx), or the document is stricter than the server;
//   - its answer must be a status the operation documents, with the
//     documented headers and body, and a problem's code must be one that
//     the response lists in x-problem-codes;
//   - a request outside the document must get a 404 or 405 problem;
//   - a 5xx is always a fault: the flows never provoke one, except 503
//     during an outage the test causes (see outage).
//
// Response schemas are checked more strictly than the document says: a
// client must ignore members it does not know (so that the API can grow),
// but the server must send none that the document does not name, so every
// object schema with properties is closed here.
type contract struct {
	t      testing.TB
	doc    *openapi3.T
	router routers.Router
	base   http.RoundTripper

	mu   sync.Mutex
	seen map[string]map[int]bool // operation ("POST /v1/login") → statuses answered
	down bool                    // see outage
}

// outage says whether the test has stopped a dependency, so that 503 is
// expected.
func (c *contract) outage(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = on
}

// newContract loads the document, closed as described above.
func newContract(t testing.TB, base http.RoundTripper) *contract {
	t.Helper()
	var raw any
	if err := json.Unmarshal(apispec.OpenAPI(), &raw); err != nil {
		t.Fatal(err)
	}
	closeObjects(raw)
	closed, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(closed)
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc) // validates the document too
	if err != nil {
		t.Fatal(err)
	}
	return &contract{t: t, doc: doc, router: router, base: base, seen: map[string]map[int]bool{}}
}

// closeObjects sets additionalProperties: false on every schema that has
// properties and says nothing of others.
func closeObjects(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"].(map[string]any); ok {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for _, sub := range v {
			closeObjects(sub)
		}
	case []any:
		for _, sub := range v {
			closeObjects(sub)
		}
	}
}

func (c *contract) CloseIdleConnections() {
	if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

func (c *contract) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	send := req.Clone(req.Context())
	send.Body = io.NopCloser(bytes.NewReader(body))
	check := req.Clone(req.Context())
	check.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := c.base.RoundTrip(send)
	if err != nil {
		return nil, err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	c.check(check, resp.StatusCode, resp.Header, answer)
	return resp, nil
}

func (c *contract) check(req *http.Request, status int, header http.Header, body []byte) {
	c.t.Helper()
	ctx := context.Background()
	where := req.Method + " " + req.URL.Path
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			c.t.Errorf("%s is not in the document (%v), yet the server answered %d: %s", where, err, status, body)
		}
		c.checkProblem(where, header, body, nil)
		c.note("(not in the document)", status)
		return
	}
	op := route.Method + " " + route.Path
	if op != where {
		where += " (" + op + ")"
	}
	opts := &openapi3filter.Options{AuthenticationFunc: bearer, SkipSettingDefaults: true, MultiError: true, IncludeResponseStatus: true}
	// The reason only: the schema, which the default message prints whole,
	// is in the document.
	opts.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string {
		return fmt.Sprintf("%s: %s", strings.Join(err.JSONPointer(), "/"), err.Reason)
	})
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	if reqErr != nil && (status < 400 || status >= 500) {
		c.t.Errorf("%s: the document refuses the request, yet the server answered %d:\n%v", where, status, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: opts}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		c.t.Errorf("%s → %d: the answer does not match the document:\n%v\nbody: %.2000s", where, status, err, body)
	}
	if status >= 500 && !(status == http.StatusServiceUnavailable && c.isDown()) {
		c.t.Errorf("%s → %d: a server fault in a flow that never provokes one: %s", where, status, body)
	}
	if header.Get("Content-Type") == "application/problem+json" {
		var codes []string
		if ref := route.Operation.Responses.Status(status); ref != nil {
			codes = problemCodes(ref.Value)
		}
		c.checkProblem(where+" → "+fmt.Sprint(status), header, body, codes)
	}
	c.note(op, status)
}

// checkProblem validates a problem answer against the Problem schema and,
// when codes is not nil, checks that its code is one of them.
func (c *contract) checkProblem(where string, header http.Header, body []byte, codes []string) {
	c.t.Helper()
	if ct := header.Get("Content-Type"); ct != "application/problem+json" {
		c.t.Errorf("%s: Content-Type %q, want application/problem+json", where, ct)
		return
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		c.t.Errorf("%s: a problem that is not JSON: %v", where, err)
		return
	}
	if err := c.doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		c.t.Errorf("%s: the problem does not match the Problem schema: %v\n%s", where, err, body)
	}
	code, _ := v.(map[string]any)["code"].(string)
	if codes != nil && !slices.Contains(codes, code) {
		c.t.Errorf("%s: problem code %q is not in this answer's x-problem-codes %v", where, code, codes)
	}
}

func (c *contract) isDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down
}

func (c *contract) note(op string, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[op] == nil {
		c.seen[op] = map[int]bool{}
	}
	c.seen[op][status] = true
}

// assertCovered fails unless every operation of the document was exercised
// and every status in statuses was answered by some operation, and logs
// what was seen.
func (c *contract) assertCovered(t testing.TB, statuses ...int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	all := map[int]bool{}
	var lines []string
	for _, op := range slices.Sorted(maps.Keys(c.seen)) {
		got := slices.Sorted(maps.Keys(c.seen[op]))
		for _, s := range got {
			all[s] = true
		}
		lines = append(lines, fmt.Sprintf("%-45s %v", op, got))
	}
	t.Logf("answers checked against the document:\n\t%s", strings.Join(lines, "\n\t"))
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			if op := method + " " + path; c.seen[op] == nil {
				t.Errorf("%s was not exercised: its schemas are not proven", op)
			}
		}
	}
	for _, s := range statuses {
		if !all[s] {
			t.Errorf("no operation answered %d", s)
		}
	}
}

// bearer is the check of both security schemes (admin key, session): the
// request carries a bearer credential. Whether it is a valid one is the
// server's to say (401).
func bearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no bearer credential")
	}
	return nil
}
