package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/latchkey/latchkey/internal/problem"
)

// readBody reads a JSON request body within the size limit. It answers 415
// for another media type (a PATCH may also be application/merge-patch+json,
// RFC 7396), 413 beyond Config.MaxBodyBytes, 400 invalid_json for an empty
// body, and a *bodyReadError when the body did not arrive whole.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		mergePatch := r.Method == http.MethodPatch && mt == "application/merge-patch+json"
		if err != nil || (mt != "application/json" && mt != "application/problem+json" && !mergePatch) {
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

// decodeStrict unmarshals body into v, which points to a struct or a slice
// of structs, and returns a problem when body is not exactly that:
//   - 400 invalid_json: not JSON (or not UTF-8), more than one JSON value,
//     or a top-level value of another kind (null, a string, an array where
//     an object belongs);
//   - 422 validation_failed listing every offending member at once, as
//     "[2].email" for array entries: unknown_field (names match exactly),
//     invalid_type (a list where a string belongs) and duplicate_field (a
//     name sent twice in one object, which encoding/json v1 resolved by
//     letting the last one win).
//
// A body without faults is decoded in one pass; only a faulty one is walked
// again, member by member, to find all of its faults.
//
// The decoder is encoding/json/v2's API (the go-json-experiment module,
// which turns into an alias of the standard library's encoding/json/v2 once
// that is enabled). Its defaults are the strict reading this API promises
// and encoding/json v1 lacks: a duplicate member name is an error rather
// than "the last one wins", names match exactly (v1 also took "IDENTIFIER"
// for identifier, a second way to send a field twice), and invalid UTF-8 is
// an error rather than silently replaced.
func decodeStrict(body []byte, v any) error {
	err := unmarshalStrict(body, v)
	if err == nil {
		// v2 decodes null into any Go value as its zero value.
		if k := jsontext.Value(body).Kind(); k == 'n' {
			return wrongBodyKind(reflect.TypeOf(v).Elem(), k)
		}
		return nil
	}
	if p := explainBody(body, reflect.TypeOf(v).Elem()); p != nil {
		return p
	}
	// The walk found nothing the one pass refused; never answer 200 for it.
	return problem.New(http.StatusBadRequest, "invalid_json", "The body cannot be read as this request.")
}

// unmarshalStrict is the one pass and the check of each member on the walk:
// the same options for both, so that they agree on what is a fault.
func unmarshalStrict(raw []byte, v any) error {
	return json.Unmarshal(raw, v, json.RejectUnknownMembers(true))
}

// explainBody finds every fault of a body that did not decode into t: the
// first syntax fault, or else a wrong top-level kind, or else every member
// fault. It returns nil when it finds none.
func explainBody(body []byte, t reflect.Type) *problem.Problem {
	// Duplicates are allowed by the tokenizer here so that the walk can go
	// on past them and report them with the rest.
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true))
	top, err := dec.ReadValue()
	if err != nil {
		return syntaxProblem(err)
	}
	top = top.Clone()
	switch _, err := dec.ReadToken(); {
	case err == nil:
		return problem.New(http.StatusBadRequest, "invalid_json", "The request body holds more than one JSON value.")
	case !errors.Is(err, io.EOF):
		return syntaxProblem(err)
	}
	if want := kindFor(t); want != 0 && top.Kind() != want {
		return wrongBodyKind(t, top.Kind())
	}
	w := walker{dec: jsontext.NewDecoder(bytes.NewReader(top), jsontext.AllowDuplicateNames(true))}
	err = w.value(t, "")
	switch {
	case errors.Is(err, errEnoughFaults):
		p := problem.Validation(w.errs)
		p.Detail = fmt.Sprintf("The request has invalid fields; the first %d are listed.", maxFieldFaults)
		return p
	case err != nil:
		// The value was read whole above, so a second read cannot fail.
		return syntaxProblem(err)
	case len(w.errs) == 0:
		return nil
	}
	return problem.Validation(w.errs)
}

// maxFieldFaults bounds the faults listed for one body. Checking a member
// on the walk costs about a microsecond, and 64 KiB of unknown members is
// several thousand of them: without a bound, one refused request from
// anyone costs some ten milliseconds of CPU and a response ten times its
// size.
const maxFieldFaults = 100

var errEnoughFaults = errors.New("enough faults listed")

// walker collects member faults in document order.
type walker struct {
	dec  *jsontext.Decoder
	errs []problem.FieldError
}

func (w *walker) fault(fe problem.FieldError) error {
	w.errs = append(w.errs, fe)
	if len(w.errs) >= maxFieldFaults {
		return errEnoughFaults
	}
	return nil
}

func (w *walker) value(t reflect.Type, path string) error {
	switch k := w.dec.PeekKind(); {
	case t.Kind() == reflect.Struct && k == '{':
		return w.object(t, path)
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8 && k == '[':
		if _, err := w.dec.ReadToken(); err != nil {
			return err
		}
		for i := 0; w.dec.PeekKind() != ']'; i++ {
			if err := w.value(t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, err := w.dec.ReadToken()
		return err
	default:
		raw, err := w.dec.ReadValue()
		if err != nil {
			return err
		}
		if err := unmarshalStrict(raw, reflect.New(t).Interface()); err != nil {
			return w.fault(memberFault(path, 0, err))
		}
		return nil
	}
}

// object checks each member of a JSON object on its own, decoding
// {"name": value} into a scratch t, so that the library decides what a
// known name and a right type are, exactly as in the one pass.
func (w *walker) object(t reflect.Type, path string) error {
	if _, err := w.dec.ReadToken(); err != nil {
		return err
	}
	scratch := reflect.New(t).Interface()
	seen := map[string]bool{}
	var member []byte
	for w.dec.PeekKind() != '}' {
		tok, err := w.dec.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String()
		if seen[name] {
			if err := w.fault(problem.FieldError{Field: joinPath(path, name), Code: "duplicate_field",
				Detail: "This field appears more than once; send it once."}); err != nil {
				return err
			}
			if err := w.dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		seen[name] = true
		raw, err := w.dec.ReadValue()
		if err != nil {
			return err
		}
		member = append(member[:0], '{')
		if member, err = jsontext.AppendQuote(member, name); err != nil {
			return err
		}
		member = append(append(append(member, ':'), raw...), '}')
		if err := unmarshalStrict(member, scratch); err != nil {
			// The error's pointer starts with the name, which may be
			// anything (digits too): the path takes it as sent.
			if err := w.fault(memberFault(joinPath(path, name), 1, err)); err != nil {
				return err
			}
		}
	}
	_, err := w.dec.ReadToken()
	return err
}

// memberFault turns the library's error for one member (or array entry)
// into a field error. Its JSON pointer, less its first skip tokens, is
// relative to path.
func memberFault(path string, skip int, err error) problem.FieldError {
	var semErr *json.SemanticError
	var synErr *jsontext.SyntacticError
	switch {
	case errors.As(err, &semErr) && errors.Is(err, json.ErrUnknownName):
		return problem.FieldError{Field: pointerPath(path, semErr.JSONPointer, skip), Code: "unknown_field",
			Detail: "This field is not part of the request."}
	case errors.As(err, &semErr):
		field := pointerPath(path, semErr.JSONPointer, skip)
		detail := fmt.Sprintf("%s has the wrong type.", field)
		if semErr.GoType != nil && semErr.JSONKind != 0 {
			detail = fmt.Sprintf("%s must be %s, not %s.", field, goKindName(semErr.GoType), jsonKindName(semErr.JSONKind))
		}
		return problem.FieldError{Field: field, Code: "invalid_type", Detail: detail}
	case errors.As(err, &synErr) && errors.Is(err, jsontext.ErrDuplicateName):
		return problem.FieldError{Field: pointerPath(path, synErr.JSONPointer, skip), Code: "duplicate_field",
			Detail: "This field appears more than once; send it once."}
	default:
		field := path
		if errors.As(err, &synErr) {
			field = pointerPath(path, synErr.JSONPointer, skip)
		}
		return problem.FieldError{Field: field, Code: "invalid_type", Detail: fmt.Sprintf("%s has the wrong type.", field)}
	}
}

func syntaxProblem(err error) *problem.Problem {
	var synErr *jsontext.SyntacticError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(http.StatusBadRequest, "invalid_json", "The body is truncated JSON.")
	case errors.As(err, &synErr):
		return problem.New(http.StatusBadRequest, "invalid_json",
			fmt.Sprintf("The body is not valid JSON (at byte %d).", synErr.ByteOffset))
	default:
		return problem.New(http.StatusBadRequest, "invalid_json", "The body is not valid JSON.")
	}
}

func wrongBodyKind(t reflect.Type, got jsontext.Kind) *problem.Problem {
	return problem.New(http.StatusBadRequest, "invalid_json",
		fmt.Sprintf("The body must be %s, not %s.", goKindName(t), jsonKindName(got)))
}

// kindFor is the JSON kind a body for t starts with, or 0 when any may.
func kindFor(t reflect.Type) jsontext.Kind {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return '{'
	case reflect.Slice, reflect.Array:
		return '['
	default:
		return 0
	}
}

func goKindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	default:
		return "a JSON object"
	}
}

func jsonKindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '[':
		return "an array"
	default:
		return "an object"
	}
}

// pointerPath appends a JSON pointer (RFC 6901), less its first skip
// tokens, to a field path in this API's notation: names joined by dots,
// array indexes in brackets. Below the member a token of digits is taken as
// an index: the request types have no maps, so no known field is named so.
func pointerPath(path string, ptr jsontext.Pointer, skip int) string {
	for tok := range ptr.Tokens() {
		if skip > 0 {
			skip--
			continue
		}
		if tok != "" && strings.Trim(tok, "0123456789") == "" {
			path += "[" + tok + "]"
		} else {
			path = joinPath(path, tok)
		}
	}
	return path
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
