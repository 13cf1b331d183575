package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/apispec"
	"github.com/latchkey/latchkey/internal/httpapi"
)

// TestOpenAPIDocumentIsServed fetches the document as a client generator
// would: without credentials, as JSON, and again with its ETag.
func TestOpenAPIDocumentIsServed(t *testing.T) {
	srv := httptest.NewServer(httpapi.New(httpapi.Deps{Logger: zerolog.Nop()}, httpapi.Config{}))
	defer srv.Close()

	get := func(header http.Header) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+"/v1/openapi.json", nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	resp, body := get(nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") || strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control = %q, want a cacheable answer", cc)
	}
	if !bytes.Equal(body, apispec.OpenAPI()) {
		t.Error("the served document is not the one in internal/apispec")
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q (%v), want 3.1.0", doc.OpenAPI, err)
	}

	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	resp, body = get(http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("with If-None-Match: %d, %d bytes; want 304 without a body", resp.StatusCode, len(body))
	}
	resp, _ = get(http.Header{"If-None-Match": {`"stale"`}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("with a stale If-None-Match: %d, want 200", resp.StatusCode)
	}
}
