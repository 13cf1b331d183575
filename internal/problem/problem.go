// Package problem writes RFC 9457 problem details. Every error answer of the
// API is one, with a stable machine-readable code and per-field errors for
// validation failures.
package problem

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ContentType of a problem response.
const ContentType = "application/problem+json"

// typeBase prefixes the type URI; the code makes each type unique.
const typeBase = "https://latchkey.dev/problems/"

// FieldError is one invalid field of a request.
type FieldError struct {
	// Field is the JSON name, with an index prefix for arrays: "[2].email".
	Field  string `json:"field"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Problem is an RFC 9457 problem detail. It is also an error, so handlers
// can return one and the error mapper writes it as is.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Code   string       `json:"code"`
	Errors []FieldError `json:"errors,omitempty"`
	// RequestID lets an operator find the request's log lines.
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, in seconds, becomes the Retry-After header when set.
	RetryAfter int `json:"-"`
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// New builds a problem with the standard title for status.
func New(status int, code, detail string) *Problem {
	return &Problem{Type: typeBase + code, Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// Validation is a 422 listing every invalid field.
func Validation(errs []FieldError) *Problem {
	p := New(http.StatusUnprocessableEntity, "validation_failed", "The request has invalid fields.")
	p.Errors = errs
	return p
}

// Write sends the problem.
func Write(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", fmt.Sprint(p.RetryAfter))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
