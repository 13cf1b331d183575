package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// writeError is the one place an error becomes an HTTP answer. Anything it
// does not recognise is a 500 whose cause goes to the log, not the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var p *problem.Problem
	var bodyErr *bodyReadError
	switch {
	case errors.As(err, &p):
		// Copy: a handler's problem value must not carry one request's id
		// into another's answer.
		cp := *p
		p = &cp
	case errors.As(err, &bodyErr):
		// The client's fault, not the server's: no error line, and a 4xx
		// in the metrics. The connection's framing is lost, so it closes.
		logger(r.Context()).Info().Err(bodyErr.err).Str("path", r.URL.Path).Msg("request body not received whole")
		w.Header().Set("Connection", "close")
		p = bodyErr.problem()
	case errors.Is(err, adminkeys.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey-admin"`)
		p = problem.New(http.StatusUnauthorized, "unauthorized", "A valid admin key is required: Authorization: Bearer <key>.")
	case errors.Is(err, accounts.ErrForbidden):
		p = problem.New(http.StatusForbidden, "forbidden", "This admin key is limited to another domain.")
	case errors.Is(err, store.ErrNotFound):
		p = problem.New(http.StatusNotFound, "not_found", "The resource does not exist.")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		p = problem.New(499, "client_closed_request", "The client closed the request.")
	case errors.Is(err, events.ErrUnavailable) || errors.Is(err, store.ErrUnavailable):
		logger(r.Context()).Warn().Err(err).Str("path", r.URL.Path).Msg("dependency unavailable")
		p = problem.New(http.StatusServiceUnavailable, "unavailable", "The service is briefly unavailable. Please try again in a few seconds.")
		p.RetryAfter = 5
	case errors.Is(err, store.ErrInvalidInput):
		p = problem.New(http.StatusBadRequest, "invalid_input", "A value in the request cannot be stored or searched (for example, it contains a NUL character).")
	case errors.Is(err, store.ErrConflict):
		p = problem.New(http.StatusConflict, "conflict", "The resource already exists.")
	default:
		logger(r.Context()).Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
		p = problem.New(http.StatusInternalServerError, "internal_error", "Something went wrong; the request id identifies it in the logs.")
	}
	p.RequestID = requestID(r.Context())
	problem.Write(w, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// readBody reads a JSON request body within the size limit. It answers 415
// for another media type, 413 beyond Config.MaxBodyBytes, 400 invalid_json
// for an empty body, and a *bodyReadError when the body did not arrive whole.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "application/problem+json") {
			return nil, problem.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "Send the body as application/json.")
		}
	}
	tooLarge := problem.New(http.StatusRequestEntityTooLarge, "body_too_large",
		fmt.Sprintf("The request body must be at most %d bytes.", s.cfg.MaxBodyBytes))
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, tooLarge
	}
	if err != nil {
		return nil, &bodyReadError{err: err}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem.New(http.StatusBadRequest, "invalid_json", "The request body is empty; send a JSON object.")
	}
	return body, nil
}

// bodyReadError is a request body that could not be read to its end. The
// server holds the whole request in memory before it acts, so the cause is
// always on the client's side of the connection: it closed or reset the
// connection before sending Content-Length bytes (net/http reports
// io.ErrUnexpectedEOF or a reset), sent a malformed chunked body, or was
// too slow for http.Server.ReadTimeout (a read deadline error).
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "read request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// problem is 408 request_timeout when the server's read deadline ended the
// body, else 400 incomplete_body.
func (e *bodyReadError) problem() *problem.Problem {
	if e.timeout() {
		return problem.New(http.StatusRequestTimeout, "request_timeout",
			"The request body did not arrive in time; send it again.")
	}
	return problem.New(http.StatusBadRequest, "incomplete_body",
		"The request body ended before its declared length, or the connection failed while it was sent.")
}

func (e *bodyReadError) timeout() bool { return errors.Is(e.err, os.ErrDeadlineExceeded) }

// decodeStrict unmarshals body into v, refusing unknown fields, values of the
// wrong type (an array where a string belongs) and trailing data.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if dec.More() {
		return problem.New(http.StatusBadRequest, "invalid_json", "The request body holds more than one JSON value.")
	}
	return nil
}

func jsonProblem(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return problem.New(http.StatusBadRequest, "invalid_json", fmt.Sprintf("The body is not valid JSON (at byte %d).", syntaxErr.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(http.StatusBadRequest, "invalid_json", "The body is truncated JSON.")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			p := problem.New(http.StatusBadRequest, "invalid_json", fmt.Sprintf("The body must be a JSON %s.", expectedKind(typeErr)))
			return p
		}
		return problem.Validation([]problem.FieldError{{
			Field: field, Code: "invalid_type",
			Detail: fmt.Sprintf("%s must be a %s, not a JSON %s.", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value),
		}})
	default:
		// Unknown fields: encoding/json says `json: unknown field "x"`.
		const prefix = "json: unknown field "
		if msg := err.Error(); len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
			return problem.Validation([]problem.FieldError{{
				Field: trimQuotes(msg[len(prefix):]), Code: "unknown_field", Detail: "This field is not part of the request.",
			}})
		}
		return problem.New(http.StatusBadRequest, "invalid_json", "The body is not valid JSON.")
	}
}

func expectedKind(e *json.UnmarshalTypeError) string {
	if e.Type.Kind().String() == "slice" {
		return "array"
	}
	return "object"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int32", "int64", "uint", "uint32", "uint64", "float64":
		return "number"
	case "slice":
		return "array"
	default:
		return "object"
	}
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}
