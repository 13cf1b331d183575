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
	"embed"
	"io/fs"
)

//go:embed openapi.json
var openAPI []byte

//go:embed events/*.json
var eventSchemas embed.FS

// OpenAPI returns the OpenAPI document (JSON), a fresh copy on each call.
func OpenAPI() []byte { return bytes.Clone(openAPI) }

// EventSchemaBase is the base of every event schema's $id: the schema of
// type T is EventSchemaBase + T + ".json", and the envelope every event
// shares is EventSchemaBase + "cloudevent.json". The type schemas refer to
// the envelope by that $id.
const EventSchemaBase = "https://latchkey.dev/schemas/events/"

// EventSchemas holds the JSON Schemas (2020-12) of the events, one file per
// type named <type>.json (reset.requested.json), and cloudevent.json.
func EventSchemas() fs.FS {
	sub, err := fs.Sub(eventSchemas, "events")
	if err != nil {
		panic(err) // "events" is a valid path, which fs.Sub never refuses
	}
	return sub
}
