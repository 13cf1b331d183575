// Package apispec holds Latchkey's published contracts, kept in the
// repository and built into the binary: the OpenAPI 3.1 document of the
// HTTP API (openapi.json, served at GET /v1/openapi.json) and the JSON
// Schemas (2020-12) of the CloudEvents on the stream (events/). Its tests
// hold both against the running service: every route the server serves is
// documented and every documented route is served, real requests and
// answers of every kind match the document, and every event the workers
// publish matches its type's schema.
package apispec

import (
	"bytes"
	_ "embed"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document (JSON), a fresh copy on each call.
func OpenAPI() []byte { return bytes.Clone(openAPI) }
