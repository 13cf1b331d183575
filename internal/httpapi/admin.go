package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// admin requires an admin key and puts its principal in the context.
func (s *Server) admin(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return adminkeys.ErrUnauthenticated
		}
		principal, err := s.deps.Auth.Authenticate(r.Context(), strings.TrimSpace(key))
		if err != nil {
			return err
		}
		ctx := context.WithValue(r.Context(), principalKey, principal)
		return next(w, r.WithContext(ctx))
	}
}

func principalOf(ctx context.Context) adminkeys.Principal {
	p, _ := ctx.Value(principalKey).(adminkeys.Principal)
	return p
}

func scopeOf(ctx context.Context) accounts.Scope {
	return accounts.Scope{DomainID: principalOf(ctx).DomainID}
}

type domainResponse struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	Locale    string    `json:"locale"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) createDomain(w http.ResponseWriter, r *http.Request) error {
	var in accounts.DomainInput
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	d, err := s.deps.Accounts.CreateDomain(r.Context(), scopeOf(r.Context()), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/admin/domains/"+d.ID.String())
	writeJSON(w, http.StatusCreated, domainJSON(d))
	return nil
}

// errDomainNotFound also answers a key scoped to another domain, which must
// not learn that the domain exists.
var errDomainNotFound = problem.New(http.StatusNotFound, "domain_not_found", "There is no domain with this id.")

func domainJSON(d store.Domain) domainResponse {
	return domainResponse{ID: d.ID, Name: d.Name, Locale: d.Locale, CreatedAt: d.CreatedAt}
}

// getDomain answers GET /v1/admin/domains/{id}, where POST's Location points.
func (s *Server) getDomain(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return errDomainNotFound
	}
	d, err := s.deps.Accounts.Domain(r.Context(), scopeOf(r.Context()), id)
	if errors.Is(err, store.ErrNotFound) {
		return errDomainNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, domainJSON(d))
	return nil
}

// listDomains answers GET /v1/admin/domains?limit=&after=, paged like the
// users: in id order, "next" is the after of the next page.
func (s *Server) listDomains(w http.ResponseWriter, r *http.Request) error {
	after, limit, errs := pageQuery(r, "a domain id")
	if len(errs) > 0 {
		return problem.Validation(errs)
	}
	// One row more than asked tells whether there is a next page.
	domains, err := s.deps.Accounts.ListDomains(r.Context(), scopeOf(r.Context()), after, limit+1)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pageOf(domains, limit, func(d store.Domain) uuid.UUID { return d.ID }, domainJSON))
	return nil
}

// page is a listing's answer: {"items":[…],"next"}, next being the after
// of the following page, absent on the last.
type page[R any] struct {
	Items []R    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// pageOf answers a listing fetched with one row more than limit: that row
// only tells that a next page exists.
func pageOf[T, R any](rows []T, limit int, id func(T) uuid.UUID, toJSON func(T) R) page[R] {
	p := page[R]{Items: make([]R, 0, min(len(rows), limit))}
	if len(rows) > limit {
		rows = rows[:limit]
		p.Next = id(rows[limit-1]).String()
	}
	for _, r := range rows {
		p.Items = append(p.Items, toJSON(r))
	}
	return p
}

// pageQuery reads limit and after (an id from an earlier page, described as
// what in its fault) and returns their faults.
func pageQuery(r *http.Request, what string) (after *uuid.UUID, limit int, errs []problem.FieldError) {
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			errs = append(errs, problem.FieldError{Field: "after", Code: "invalid_cursor", Detail: "after must be " + what + " from an earlier page."})
		}
		after = &id
	}
	limit, ok := pageSize(q.Get("limit"))
	if !ok {
		errs = append(errs, problem.FieldError{Field: "limit", Code: "invalid_limit", Detail: "limit must be a number from 1 to 500."})
	}
	return after, limit, errs
}

type userResponse struct {
	ID           uuid.UUID `json:"id"`
	LoginName    string    `json:"login_name"`
	Domain       string    `json:"domain"`
	Extension    string    `json:"extension"`
	Email        string    `json:"email"`
	FirstName    string    `json:"first_name"`
	LastName     string    `json:"last_name"`
	Locale       string    `json:"locale"`
	PasswordSet  bool      `json:"password_set"`
	PINSet       bool      `json:"pin_set"`
	Status       string    `json:"status"`
	RolloutPhase string    `json:"rollout_phase"`
	CreatedAt    time.Time `json:"created_at"`
}

func userJSON(u store.User) userResponse {
	return userResponse{
		ID: u.ID, LoginName: u.LoginName, Domain: u.DomainName, Extension: u.Extension, Email: u.Email,
		FirstName: u.FirstName, LastName: u.LastName, Locale: u.Locale, PasswordSet: u.PasswordSet,
		PINSet: u.PINSet, Status: u.Status, RolloutPhase: u.RolloutPhase, CreatedAt: u.CreatedAt,
	}
}

// createUsers takes one user object, or an array of them for an import; the
// answer has the same shape as the request.
func (s *Server) createUsers(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	batch := bytes.HasPrefix(bytes.TrimSpace(body), []byte("["))
	var inputs []accounts.UserInput
	if batch {
		err = decodeStrict(body, &inputs)
	} else {
		var one accounts.UserInput
		err = decodeStrict(body, &one)
		inputs = []accounts.UserInput{one}
	}
	if err != nil {
		return err
	}
	users, err := s.deps.Accounts.CreateUsers(r.Context(), scopeOf(r.Context()), inputs, batch)
	if err != nil {
		return err
	}
	if !batch {
		w.Header().Set("Location", "/v1/admin/users/"+users[0].ID.String())
		writeJSON(w, http.StatusCreated, userJSON(users[0]))
		return nil
	}
	out := make([]userResponse, len(users))
	for i, u := range users {
		out[i] = userJSON(u)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// getUser answers GET /v1/admin/users/{id}, where POST's Location points.
// A malformed id, an unknown one and one of another domain than the key's
// get the same 404.
func (s *Server) getUser(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return errUserNotFound
	}
	u, err := s.deps.Accounts.User(r.Context(), scopeOf(r.Context()), id)
	if errors.Is(err, store.ErrNotFound) {
		return errUserNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userJSON(u))
	return nil
}

// userPatchBody is the body of PATCH /v1/admin/users/{id}, decoded strictly
// like every body; which members were present, and which null, is read
// separately (a nil pointer is either).
type userPatchBody struct {
	FirstName *string `json:"first_name"`
	LastName  *string `json:"last_name"`
	Email     *string `json:"email"`
	Locale    *string `json:"locale"`
	Extension *string `json:"extension"`
}

// updateUser answers PATCH /v1/admin/users/{id} (a JSON merge patch, RFC
// 7396) with the user as it now is. The body is checked before the id, so
// that a bad body gets the same 422 whether the user exists or not.
func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var in userPatchBody
	if err := decodeStrict(body, &in); err != nil {
		return err
	}
	var members map[string]jsontext.Value
	if err := json.Unmarshal(body, &members); err != nil {
		return fmt.Errorf("read the members of a decoded patch: %w", err)
	}
	field := func(name string, v *string) accounts.Field {
		raw, set := members[name]
		f := accounts.Field{Set: set, Null: set && raw.Kind() == 'n'}
		if v != nil {
			f.Value = *v
		}
		return f
	}
	patch := accounts.UserPatch{
		FirstName: field("first_name", in.FirstName), LastName: field("last_name", in.LastName),
		Email: field("email", in.Email), Locale: field("locale", in.Locale), Extension: field("extension", in.Extension),
	}
	id, idErr := uuid.Parse(r.PathValue("id"))
	if idErr != nil {
		// Unknown, once the body has been judged like any other.
		id = uuid.Nil
	}
	principal := principalOf(r.Context())
	u, err := s.deps.Accounts.UpdateUser(r.Context(), scopeOf(r.Context()), id, patch, metaOf(r, audit.ActorAdmin, principal.KeyID))
	if errors.Is(err, store.ErrNotFound) {
		return errUserNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userJSON(u))
	return nil
}

// setStatus answers POST /v1/admin/users/{id}/disable and …/enable with the
// user as it now is.
func (s *Server) setStatus(status string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := uuid.Parse(r.PathValue("id"))
		if err != nil {
			return errUserNotFound
		}
		principal := principalOf(r.Context())
		u, err := s.deps.Accounts.SetStatus(r.Context(), scopeOf(r.Context()), id, status, metaOf(r, audit.ActorAdmin, principal.KeyID))
		if errors.Is(err, store.ErrNotFound) {
			return errUserNotFound
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, userJSON(u))
		return nil
	}
}

const (
	defaultPageSize = 100
	maxPageSize     = 500
)

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var errs []problem.FieldError
	f := accounts.ListFilter{Domain: q.Get("domain")}
	if v := q.Get("password_set"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, problem.FieldError{Field: "password_set", Code: "invalid_boolean", Detail: "password_set must be true or false."})
		}
		f.PasswordSet = &b
	}
	after, limit, pageErrs := pageQuery(r, "a user id")
	f.After = after
	errs = append(errs, pageErrs...)
	if len(errs) > 0 {
		return problem.Validation(errs)
	}
	// One row more than asked tells whether there is a next page.
	f.Limit = limit + 1
	users, err := s.deps.Accounts.ListUsers(r.Context(), scopeOf(r.Context()), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pageOf(users, limit, func(u store.User) uuid.UUID { return u.ID }, userJSON))
	return nil
}

type deadLetterResponse struct {
	ID             uuid.UUID  `json:"id"`
	Type           string     `json:"type"`
	Reason         string     `json:"reason"`
	Attempts       int        `json:"attempts"`
	Consumer       string     `json:"consumer"`
	EventID        string     `json:"event_id"`
	Subject        string     `json:"subject"`
	StreamSequence uint64     `json:"stream_sequence"`
	CreatedAt      time.Time  `json:"created_at"`
	ReplayedAt     *time.Time `json:"replayed_at"`
}

// listDeadLetters is operational and spans every domain, so a key limited to
// one domain may not read it.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if scopeOf(r.Context()).DomainID != nil {
		return accounts.ErrForbidden
	}
	limit, ok := pageSize(r.URL.Query().Get("limit"))
	if !ok {
		return problem.Validation([]problem.FieldError{{Field: "limit", Code: "invalid_limit", Detail: "limit must be a number from 1 to 500."}})
	}
	letters, err := s.deps.Store.ListDeadLetters(r.Context(), nil, limit)
	if err != nil {
		return err
	}
	items := make([]deadLetterResponse, len(letters))
	for i, d := range letters {
		items[i] = deadLetterResponse{
			ID: d.ID, Type: d.EventType, Reason: d.Reason, Attempts: d.Attempts, Consumer: d.Consumer,
			EventID: d.EventID, Subject: d.Subject, StreamSequence: d.StreamSequence, CreatedAt: d.CreatedAt,
			ReplayedAt: d.ReplayedAt,
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

func pageSize(v string) (int, bool) {
	if v == "" {
		return defaultPageSize, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPageSize {
		return 0, false
	}
	return n, true
}
