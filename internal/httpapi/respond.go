package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

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
		// Only operations that span every domain (creating a domain,
		// reading dead letters) refuse a key outright; a scoped key asking
		// for another domain's object gets 404, as for one that does not
		// exist.
		p = problem.New(http.StatusForbidden, "forbidden",
			"This admin key is limited to one domain; this operation spans every domain and needs an admin key without a domain.")
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
