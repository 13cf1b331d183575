package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/login"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/ratelimit"
	"github.com/latchkey/latchkey/internal/recovery"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// Limiters throttle the unauthenticated endpoints. Their state is in
// PostgreSQL, shared by every ingress process.
type Limiters struct {
	// PerAddress counts recovery and login requests per client address
	// (ratelimit.AddressKey: IPv6 by /64), each flow in its own bucket.
	PerAddress *ratelimit.Limiter
	// PerAccount counts recovery requests per account (or identifier).
	PerAccount *ratelimit.Limiter
}

// rateLimited turns a limiter's answer into the handler's: its error (a
// store error, 503 when PostgreSQL is down, so an outage refuses too), 429
// with Retry-After when refused, nil when allowed.
func rateLimited(d ratelimit.Decision, err error) error {
	if err != nil {
		return err
	}
	if d.Allowed {
		return nil
	}
	p := problem.New(http.StatusTooManyRequests, "rate_limited", "Too many requests. Please try again later.")
	p.RetryAfter = max(1, int((d.RetryAfter+time.Second-1)/time.Second))
	return p
}

// allowAddress takes one request of the client's address in bucket (login,
// recovery).
func (s *Server) allowAddress(r *http.Request, bucket string) error {
	if s.deps.Limiters.PerAddress == nil {
		return nil
	}
	key := bucket + ":" + ratelimit.AddressKey(clientIP(r.Context()))
	return rateLimited(s.deps.Limiters.PerAddress.Allow(r.Context(), key))
}

// allowAccount is the per-account check recovery.Service.Forgot applies to
// the account's key.
func (s *Server) allowAccount(ctx context.Context) func(key string) error {
	return func(key string) error {
		if s.deps.Limiters.PerAccount == nil {
			return nil
		}
		return rateLimited(s.deps.Limiters.PerAccount.Allow(ctx, key))
	}
}

func metaOf(r *http.Request, actorKind, actorID string) audit.Meta {
	return audit.Meta{ActorKind: actorKind, ActorID: actorID, SourceAddr: clientAddr(r), RequestID: requestID(r.Context())}
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

func required(field, value string) []problem.FieldError {
	if strings.TrimSpace(value) == "" {
		return []problem.FieldError{{Field: field, Code: "required", Detail: field + " is required."}}
	}
	return nil
}

func (s *Server) forgotPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Identifier string `json:"identifier"`
	}
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	name, ok := identifier.Recovery(in.Identifier)
	if !ok {
		return problem.Validation([]problem.FieldError{{Field: "identifier", Code: "invalid_identifier",
			Detail: "Enter your username or email address."}})
	}
	if err := s.allowAddress(r, "recovery"); err != nil {
		return err
	}
	if err := s.deps.Recovery.Forgot(r.Context(), name, metaOf(r, audit.ActorSelf, ""), s.allowAccount(r.Context())); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"message": recovery.MsgRequestProcessed})
	return nil
}

func (s *Server) inspectToken(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Token string `json:"token"`
	}
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	info, err := s.deps.Recovery.Inspect(r.Context(), in.Token, []string{recovery.PurposeReset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) resetPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Token           string `json:"token"`
		NewPassword     string `json:"new_password"`
		ConfirmPassword string `json:"confirm_password"`
	}
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	res, err := s.deps.Recovery.Reset(r.Context(), in.Token, in.NewPassword, in.ConfirmPassword, metaOf(r, audit.ActorSelf, ""))
	if err != nil {
		return err
	}
	out := map[string]any{"message": recovery.MsgPasswordChanged, "login_name": res.LoginName}
	if res.Session != nil {
		out["session"] = res.Session
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminPasswordReset(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return errUserNotFound
	}
	principal := principalOf(r.Context())
	err = s.deps.Recovery.AdminReset(r.Context(), principal.DomainID, id, metaOf(r, audit.ActorAdmin, principal.KeyID))
	if errors.Is(err, store.ErrNotFound) {
		return errUserNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"message": "A password reset email will be sent to the user."})
	return nil
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		LoginName string `json:"login_name"`
		Secret    string `json:"secret"`
	}
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	// The secret is not trimmed: white space is part of a password.
	errs := required("login_name", in.LoginName)
	if in.Secret == "" {
		errs = append(errs, problem.FieldError{Field: "secret", Code: "required", Detail: "secret is required."})
	}
	if len(errs) > 0 {
		return problem.Validation(errs)
	}
	if err := s.allowAddress(r, "login"); err != nil {
		return err
	}
	res, err := s.deps.Login.Login(r.Context(), in.LoginName, in.Secret, metaOf(r, audit.ActorSelf, ""))
	var locked *login.LockedError
	if errors.As(err, &locked) {
		return locked.Problem(s.deps.Now())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": res.Session, "login_name": res.LoginName})
	return nil
}

type sessionKey struct{}

// authenticated requires a session bearer token.
func (s *Server) authenticated(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return errUnauthenticatedSession
		}
		sess, err := s.deps.Sessions.Authenticate(r.Context(), strings.TrimSpace(token))
		if errors.Is(err, sessions.ErrInvalid) {
			return errUnauthenticatedSession
		}
		if err != nil {
			return err
		}
		ctx := context.WithValue(r.Context(), sessionKey{}, sessionAndToken{sess, strings.TrimSpace(token)})
		return next(w, r.WithContext(ctx))
	}
}

// errUserNotFound also answers a key scoped to another domain, which must
// not learn that the user exists.
var errUserNotFound = problem.New(http.StatusNotFound, "user_not_found", "There is no user with this id.")

var errUnauthenticatedSession = problem.New(http.StatusUnauthorized, "unauthenticated", "Log in first: Authorization: Bearer <session token>.")

type sessionAndToken struct {
	store.Session
	token string
}

func sessionOf(ctx context.Context) sessionAndToken {
	s, _ := ctx.Value(sessionKey{}).(sessionAndToken)
	return s
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) error {
	u, err := s.deps.Store.UserWithDomain(r.Context(), nil, sessionOf(r.Context()).UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userJSON(u))
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	sess := sessionOf(r.Context())
	if err := s.deps.Sessions.End(r.Context(), sess.token); err != nil {
		return err
	}
	if err := audit.Record(r.Context(), s.deps.Store, nil, audit.SessionEnded, &sess.UserID, nil, metaOf(r, audit.ActorSelf, ""), nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deliveryResponse struct {
	ID        uuid.UUID  `json:"id"`
	Template  string     `json:"template"`
	Locale    string     `json:"locale"`
	Recipient string     `json:"recipient"`
	Status    string     `json:"status"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error"`
	CreatedAt time.Time  `json:"created_at"`
	SentAt    *time.Time `json:"sent_at"`
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.URL.Query().Get("user_id"))
	if err != nil {
		return problem.Validation([]problem.FieldError{{Field: "user_id", Code: "invalid_user_id", Detail: "user_id must be a user id."}})
	}
	u, err := s.deps.Store.UserWithDomain(r.Context(), nil, id)
	if errors.Is(err, store.ErrNotFound) {
		return errUserNotFound
	}
	if err != nil {
		return err
	}
	if scope := principalOf(r.Context()).DomainID; scope != nil && *scope != u.DomainID {
		return errUserNotFound
	}
	ds, err := s.deps.Store.DeliveriesByUser(r.Context(), id, maxPageSize)
	if err != nil {
		return err
	}
	items := make([]deliveryResponse, len(ds))
	for i, d := range ds {
		items[i] = deliveryResponse{ID: d.ID, Template: d.Template, Locale: d.Locale, Recipient: d.Recipient,
			Status: d.Status, Attempts: d.Attempts, LastError: d.LastError, CreatedAt: d.CreatedAt, SentAt: d.SentAt}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}
