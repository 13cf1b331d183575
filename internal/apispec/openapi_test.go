package apispec_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/apispec"
	"github.com/latchkey/latchkey/internal/httpapi"
)

// parseOpenAPI parses the document with kin-openapi, which resolves every
// $ref.
func parseOpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(apispec.OpenAPI())
	if err != nil {
		t.Fatalf("openapi.json does not load: %v", err)
	}
	return doc
}

// loadOpenAPI parses the document and validates it as OpenAPI 3.1 (with
// JSON Schema 2020-12 schemas).
func loadOpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	doc := parseOpenAPI(t)
	if err := doc.Validate(context.Background(), openapi3.EnableMultiError()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document:\n%v", err)
	}
	return doc
}

// TestOpenAPIDocumentIsValid checks the document as a client generator
// reads it, and the rules this project adds: every operation has a unique
// operationId; every problem answer lists its codes in x-problem-codes and
// explains each in its description; every request body refuses members it
// does not name, as the server's strict decoding does.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi = %q, want 3.1", doc.OpenAPI)
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s: no operationId", where)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s: operationId %q is also %s's", where, op.OperationID, other)
			}
			ids[op.OperationID] = where
			for status, ref := range op.Responses.Map() {
				resp := ref.Value
				if resp.Content.Get("application/problem+json") == nil {
					continue
				}
				codes := problemCodes(resp)
				if len(codes) == 0 {
					t.Errorf("%s %s: a problem answer without x-problem-codes", where, status)
				}
				for _, c := range codes {
					if !strings.Contains(*resp.Description, "`"+c+"`") {
						t.Errorf("%s %s: x-problem-codes has %q, which the description does not explain", where, status, c)
					}
				}
			}
			if op.RequestBody != nil {
				for mt, media := range op.RequestBody.Value.Content {
					for _, bad := range openObjects(media.Schema, "") {
						t.Errorf("%s %s: request schema%s takes any member; the server's decoding is strict (additionalProperties: false)", where, mt, bad)
					}
				}
			}
		}
	}
}

// problemCodes is a response's x-problem-codes.
func problemCodes(resp *openapi3.Response) []string {
	raw, _ := resp.Extensions["x-problem-codes"].([]any)
	codes := make([]string, 0, len(raw))
	for _, c := range raw {
		s, _ := c.(string)
		codes = append(codes, s)
	}
	return codes
}

// openObjects lists the object schemas under s that do not set
// additionalProperties: false.
func openObjects(s *openapi3.SchemaRef, at string) []string {
	if s == nil || s.Value == nil {
		return nil
	}
	v := s.Value
	var out []string
	if v.Type.Is("object") && (v.AdditionalProperties.Has == nil || *v.AdditionalProperties.Has) {
		out = append(out, at)
	}
	for i, sub := range v.OneOf {
		out = append(out, openObjects(sub, fmt.Sprintf("%s.oneOf[%d]", at, i))...)
	}
	for name, p := range v.Properties {
		out = append(out, openObjects(p, at+"."+name)...)
	}
	if v.Items != nil {
		out = append(out, openObjects(v.Items, at+"[]")...)
	}
	return out
}

// servedRoutes is every route the API and ops servers register, as
// "METHOD /path".
func servedRoutes(t testing.TB) map[string]bool {
	t.Helper()
	deps := httpapi.Deps{Logger: zerolog.Nop()}
	served := map[string]bool{}
	for _, p := range slices.Concat(httpapi.New(deps, httpapi.Config{}).Patterns(), httpapi.NewOps(deps).Patterns()) {
		method, path, ok := strings.Cut(p, " ")
		if !ok || method == "" || strings.Contains(path, "...}") || strings.Contains(path, "{$}") || !strings.HasPrefix(path, "/") {
			t.Errorf("route %q cannot be written as an OpenAPI path: register routes as \"METHOD /path/{name}\"", p)
			continue
		}
		served[method+" "+path] = true
	}
	return served
}

// TestOpenAPIDocumentsEveryRoute holds the document against the routes the
// server registers (httpapi.Server.Patterns): a route served but missing
// from the document, or documented but not served, fails.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := parseOpenAPI(t)
	served := servedRoutes(t)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	var undocumented, missing []string
	for r := range served {
		if !documented[r] {
			undocumented = append(undocumented, r)
		}
	}
	for r := range documented {
		if !served[r] {
			missing = append(missing, r)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(missing)
	if len(undocumented) > 0 {
		t.Errorf("served but not in internal/apispec/openapi.json (document them):\n\t%s", strings.Join(undocumented, "\n\t"))
	}
	if len(missing) > 0 {
		t.Errorf("in internal/apispec/openapi.json but not served by httpapi (register them, or remove them from the document):\n\t%s", strings.Join(missing, "\n\t"))
	}
	if t.Failed() {
		t.Logf("served: %s", strings.Join(slices.Sorted(maps.Keys(served)), ", "))
	}
}
