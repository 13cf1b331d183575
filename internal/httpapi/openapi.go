package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/latchkey/latchkey/internal/apispec"
)

// openAPIDoc is the OpenAPI document as served, with its entity tag.
type openAPIDoc struct {
	body []byte
	etag string
}

func newOpenAPIDoc() openAPIDoc {
	body := apispec.OpenAPI()
	sum := sha256.Sum256(body)
	return openAPIDoc{body: body, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
}

// openAPI serves GET /v1/openapi.json without authentication: it holds
// nothing a client could not learn by calling the API. It may be cached
// for five minutes; after that a client revalidates with If-None-Match
// (304 while it is current), so a new release is picked up within minutes.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("ETag", s.openapi.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.openapi.body))
	return nil
}
