// Package httpapi is Latchkey's HTTP ingress: routing, middleware, the one
// function that maps errors to problem responses, and the handlers, which
// stay thin and call the services that own each flow.
package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/login"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/recovery"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// Check is a named readiness probe of a dependency.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Config configures the HTTP API.
type Config struct {
	MaxBodyBytes int64
	// TrustedProxies are the peers whose X-Forwarded-For is believed
	// (config.Config.TrustedProxies, unmapped).
	TrustedProxies []netip.Prefix
}

// Deps are the services the handlers call.
type Deps struct {
	Store    *store.Store
	Accounts *accounts.Service
	Recovery *recovery.Service
	Login    *login.Service
	Sessions *sessions.Manager
	Limiters Limiters
	Now      func() time.Time
	Auth     *adminkeys.Authenticator
	Checks   []Check
	Gatherer prometheus.Gatherer
	Metrics  *Metrics
	Logger   zerolog.Logger
}

// Server routes requests to handlers.
type Server struct {
	cfg  Config
	deps Deps
	mux  *http.ServeMux
	// patterns are the mux's, in the order they were registered.
	patterns []string
	openapi  openAPIDoc
}

// Patterns lists every route the server serves, as its http.ServeMux
// pattern ("POST /v1/login"), in the order registered. The OpenAPI
// document is held against this list (internal/apispec).
func (s *Server) Patterns() []string { return slices.Clone(s.patterns) }

// New builds the handler tree.
func New(deps Deps, cfg Config) *Server {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	s := &Server{cfg: cfg, deps: deps, mux: http.NewServeMux(), openapi: newOpenAPIDoc()}
	s.routes()
	return s
}

// NewOps builds a handler with only the operational endpoints, for processes
// that run workers without the API.
func NewOps(deps Deps) *Server {
	s := &Server{deps: deps, mux: http.NewServeMux()}
	s.opsRoutes()
	return s
}

func (s *Server) opsRoutes() {
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.register("GET /metrics", s.deps.Metrics.instrument("GET /metrics",
		promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{})))
}

func (s *Server) routes() {
	s.opsRoutes()
	// The POST routes that publish or change state honour Idempotency-Key
	// (see idempotent), after authentication, which scopes the keys. Not
	// login: a retry has no effect worth suppressing (one more session, no
	// email), and a stored fingerprint of its body would be a fast check of
	// a password. Not logout: its retry answers 401, which says what the
	// client wants to know, that the session is over. Not inspect: it only
	// reads.
	//
	// PATCH does not either: a merge patch sent again sets the same values
	// and changes nothing more (an email already changed revokes nothing
	// twice), so a retry is safe without a stored answer; and replaying a
	// stale answer would hide a change made in between.
	s.handle("POST /v1/admin/domains", s.admin(s.idempotent(s.createDomain)))
	s.handle("GET /v1/admin/domains", s.admin(s.listDomains))
	s.handle("GET /v1/admin/domains/{id}", s.admin(s.getDomain))
	s.handle("POST /v1/admin/users", s.admin(s.idempotent(s.createUsers)))
	s.handle("GET /v1/admin/users", s.admin(s.listUsers))
	s.handle("GET /v1/admin/users/{id}", s.admin(s.getUser))
	s.handle("PATCH /v1/admin/users/{id}", s.admin(s.updateUser))
	s.handle("GET /v1/admin/dead-letters", s.admin(s.listDeadLetters))
	s.handle("POST /v1/admin/users/{id}/password-reset", s.admin(s.idempotent(s.adminPasswordReset)))
	s.handle("POST /v1/admin/users/{id}/disable", s.admin(s.idempotent(s.setStatus(accounts.StatusDisabled))))
	s.handle("POST /v1/admin/users/{id}/enable", s.admin(s.idempotent(s.setStatus(accounts.StatusActive))))
	s.handle("GET /v1/admin/deliveries", s.admin(s.listDeliveries))

	s.handle("POST /v1/password/forgot", s.idempotent(s.forgotPassword))
	s.handle("POST /v1/tokens/inspect", s.inspectToken)
	s.handle("POST /v1/password/reset", s.idempotent(s.resetPassword))
	s.handle("POST /v1/login", s.login)
	s.handle("GET /v1/me", s.authenticated(s.me))
	s.handle("POST /v1/logout", s.authenticated(s.logout))

	s.handle("GET /v1/openapi.json", s.openAPI)
}

// handlerFunc is a handler that returns its error to the one error mapper.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) handle(pattern string, h handlerFunc) {
	s.register(pattern, s.deps.Metrics.instrument(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})))
}

// register is the one place a route joins the mux, so that Patterns lists
// them all.
func (s *Server) register(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, h)
}

// ServeHTTP runs the middleware around the router.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.middleware(http.HandlerFunc(s.route)).ServeHTTP(w, r)
}

// route answers unknown paths and wrong methods with problem details rather
// than the router's plain text.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.Header().Get("Allow"))
		s.writeError(w, r, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "This path does not accept the method "+r.Method+"."))
		return
	}
	s.deps.Metrics.observe("unmatched", r.Method, http.StatusNotFound, 0)
	s.writeError(w, r, problem.New(http.StatusNotFound, "not_found", "There is nothing at this path."))
}
