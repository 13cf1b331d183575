// Package accounts owns tenants and users as admins create, read, change and
// list them: validation of what comes in, hashing of initial secrets, the
// rules that make a login name unique, and what an email change revokes.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/text/language"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// MaxImport bounds one POST /v1/admin/users array; larger imports are sent
// in several requests.
const MaxImport = 500

// Service creates, reads, changes, lists, disables and enables domains and
// users.
type Service struct {
	cfg    Config
	store  *store.Store
	hasher *credential.Hasher
	policy *credential.Policy
	now    func() time.Time
}

// Config configures the service.
type Config struct {
	// DeliveryClaimLease is the mailer's claim lease
	// (delivery.MailerConfig.Lease): a delivery claimed or renewed within it
	// may be on the wire, so an email change refuses until it is out.
	// Default 2 minutes.
	DeliveryClaimLease time.Duration
}

// New builds the service.
func New(st *store.Store, hasher *credential.Hasher, policy *credential.Policy, now func() time.Time, cfg Config) *Service {
	if cfg.DeliveryClaimLease <= 0 {
		cfg.DeliveryClaimLease = 2 * time.Minute
	}
	return &Service{cfg: cfg, store: st, hasher: hasher, policy: policy, now: now}
}

// Scope limits what an admin key may touch: nil DomainID means every domain.
//
// Login names are one namespace shared by every domain, so a key limited to
// a domain creates login names only in that domain's part of it (ending in
// @domain, the form of the default extension@domain). Otherwise it could
// squat another domain's names and learn, from a refusal, which exist. For
// the same reason it gets the same answer for a domain or user that exists
// elsewhere as for one that does not exist.
type Scope struct{ DomainID *uuid.UUID }

// covers reports whether the scope reaches domainID.
func (sc Scope) covers(domainID uuid.UUID) bool {
	return sc.DomainID == nil || *sc.DomainID == domainID
}

// ErrForbidden means the operation spans every domain (creating a domain,
// reading dead letters), which a key limited to one domain may never do. A
// scoped key asking for another domain's object is answered as for one that
// does not exist instead, never with this error.
var ErrForbidden = errors.New("the operation needs an admin key without a domain")

// DomainInput is the body of POST /v1/admin/domains.
type DomainInput struct {
	Name   string `json:"name"`
	Locale string `json:"locale"`
}

// CreateDomain validates and stores a tenant. Names are kept lower-case so
// that uniqueness ignores case. A name whose namespace other domains' login
// names already use (they end in @name) is refused with 409
// domain_namespace_taken: that domain's default login names would collide
// with, or be captured by, those users.
func (s *Service) CreateDomain(ctx context.Context, scope Scope, in DomainInput) (store.Domain, error) {
	if scope.DomainID != nil {
		return store.Domain{}, ErrForbidden
	}
	var errs []problem.FieldError
	name, valid := identifier.DomainName(in.Name)
	switch {
	case name == "":
		errs = append(errs, fieldErr("name", "required", "The domain name is required."))
	case !valid:
		errs = append(errs, fieldErr("name", "invalid_domain_name", identifier.DomainNameRule))
	}
	locale, ok := canonicalLocale(in.Locale, "en")
	if !ok {
		errs = append(errs, fieldErr("locale", "invalid_locale", "The locale must be a BCP 47 language tag, such as en or fr-CA."))
	}
	if len(errs) > 0 {
		return store.Domain{}, problem.Validation(errs)
	}
	taken, err := s.store.LoginNamesInNamespace(ctx, name)
	if err != nil {
		return store.Domain{}, err
	}
	if taken {
		return store.Domain{}, problem.New(409, "domain_namespace_taken",
			fmt.Sprintf("Users of other domains have login names ending in @%s; rename them before creating this domain.", name))
	}
	d, err := s.store.CreateDomain(ctx, name, locale)
	if errors.Is(err, store.ErrConflict) {
		return store.Domain{}, problem.New(409, "domain_exists", fmt.Sprintf("A domain named %s already exists.", name))
	}
	return d, err
}

// UserInput is one user in the body of POST /v1/admin/users.
type UserInput struct {
	Domain    string  `json:"domain"`
	Extension string  `json:"extension"`
	Email     string  `json:"email"`
	FirstName string  `json:"first_name"`
	LastName  string  `json:"last_name"`
	Locale    string  `json:"locale"`
	LoginName string  `json:"login_name"`
	PIN       *string `json:"pin"`
	Password  *string `json:"password"`
}

// CreateUsers validates every entry first, so the answer lists all problems
// at once, then stores them all or none.
func (s *Service) CreateUsers(ctx context.Context, scope Scope, inputs []UserInput, batch bool) ([]store.User, error) {
	if len(inputs) == 0 {
		return nil, problem.New(422, "empty_import", "The array of users is empty.")
	}
	if len(inputs) > MaxImport {
		return nil, problem.New(413, "import_too_large", fmt.Sprintf("Send at most %d users per request.", MaxImport))
	}
	domains := map[string]store.Domain{}
	var errs []problem.FieldError
	users := make([]store.NewUser, len(inputs))
	secrets := make([]struct{ password, pin *string }, len(inputs))
	seenLogin := map[string]int{}
	seenExt := map[string]int{}
	for i, in := range inputs {
		prefix := ""
		if batch {
			prefix = fmt.Sprintf("[%d].", i)
		}
		u, fieldErrs, err := s.validateUser(ctx, scope, in, domains)
		if err != nil {
			return nil, err
		}
		for _, fe := range fieldErrs {
			fe.Field = prefix + fe.Field
			errs = append(errs, fe)
		}
		if len(fieldErrs) == 0 {
			login := strings.ToLower(u.LoginName)
			if j, dup := seenLogin[login]; dup {
				errs = append(errs, fieldErr(prefix+"login_name", "duplicate_in_request", fmt.Sprintf("Entry %d has the same login name.", j)))
			}
			ext := u.DomainID.String() + "/" + u.Extension
			if j, dup := seenExt[ext]; dup {
				errs = append(errs, fieldErr(prefix+"extension", "duplicate_in_request", fmt.Sprintf("Entry %d has the same extension in this domain.", j)))
			}
			seenLogin[login], seenExt[ext] = i, i
		}
		users[i] = u
		secrets[i].password, secrets[i].pin = in.Password, in.PIN
	}
	if len(errs) > 0 {
		return nil, problem.Validation(errs)
	}
	// Hash only once everything is valid: argon2id is the expensive part.
	for i := range users {
		var err error
		if users[i].PasswordHash, err = s.hashOptional(ctx, secrets[i].password); err != nil {
			return nil, err
		}
		if users[i].PINHash, err = s.hashOptional(ctx, secrets[i].pin); err != nil {
			return nil, err
		}
	}
	created, err := s.store.CreateUsers(ctx, users)
	var conflict *store.ConflictError
	if errors.As(err, &conflict) {
		var batchErr *store.BatchError
		index := 0
		if errors.As(err, &batchErr) {
			index = batchErr.Index
		}
		return nil, conflictProblem(conflict.Constraint, users[index], index, batch)
	}
	if err != nil {
		return nil, err
	}
	for i := range created {
		created[i].DomainName = domainNameByID(domains, created[i].DomainID)
	}
	return created, nil
}

func (s *Service) validateUser(ctx context.Context, scope Scope, in UserInput, domains map[string]store.Domain) (store.NewUser, []problem.FieldError, error) {
	var errs []problem.FieldError
	var u store.NewUser

	domainKey, _ := identifier.DomainName(in.Domain)
	d, known := domains[domainKey]
	if domainKey == "" {
		errs = append(errs, fieldErr("domain", "required", "The domain is required."))
	} else if !known {
		found, err := s.store.DomainByName(ctx, domainKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
			errs = append(errs, fieldErr("domain", "domain_not_found", fmt.Sprintf("There is no domain named %s.", domainKey)))
		case err != nil:
			return u, nil, err
		default:
			d, known = found, true
			domains[domainKey] = found
		}
	}
	if known && !scope.covers(d.ID) {
		// Exactly the answer for a domain that does not exist.
		known = false
		errs = append(errs, fieldErr("domain", "domain_not_found", fmt.Sprintf("There is no domain named %s.", domainKey)))
	}
	u.DomainID = d.ID

	var ok bool
	if u.Extension, ok = identifier.Extension(in.Extension); u.Extension == "" {
		errs = append(errs, fieldErr("extension", "required", "The extension is required."))
	} else if !ok {
		errs = append(errs, fieldErr("extension", "invalid_extension", identifier.ExtensionRule))
	}

	if strings.TrimSpace(in.Email) == "" {
		errs = append(errs, fieldErr("email", "required", "The email address is required."))
	} else if u.Email, ok = identifier.Email(in.Email); !ok {
		errs = append(errs, fieldErr("email", "invalid_email", identifier.EmailRule))
	}

	var fe []problem.FieldError
	u.FirstName, fe = personName("first_name", in.FirstName)
	errs = append(errs, fe...)
	u.LastName, fe = personName("last_name", in.LastName)
	errs = append(errs, fe...)

	locale, ok := canonicalLocale(in.Locale, "")
	if !ok {
		errs = append(errs, fieldErr("locale", "invalid_locale", "The locale must be a BCP 47 language tag, such as en or fr-CA."))
	}
	if locale == "" {
		// Fixed at creation: a later change of the domain's locale is a
		// decision about new users, not a silent change for existing ones.
		locale = d.Locale
	}
	u.Locale = locale

	if strings.TrimSpace(in.LoginName) == "" {
		if u.Extension != "" && known {
			u.LoginName = u.Extension + "@" + d.Name
		}
	} else if u.LoginName, ok = identifier.LoginName(in.LoginName); !ok {
		errs = append(errs, fieldErr("login_name", "invalid_login_name", identifier.LoginNameRule))
	} else if known {
		fe, err := s.checkNamespace(ctx, scope, d, u.LoginName)
		if err != nil {
			return u, nil, err
		}
		errs = append(errs, fe...)
	}

	id := credential.Identity{LoginName: u.LoginName, Extension: u.Extension, Email: u.Email}
	if in.Password != nil {
		for _, v := range s.policy.CheckPasswordField("password", *in.Password, id) {
			errs = append(errs, fieldErr(v.Field, v.Code, v.Message))
		}
	}
	if in.PIN != nil {
		for _, v := range s.policy.CheckPINField("pin", *in.PIN, id) {
			errs = append(errs, fieldErr(v.Field, v.Code, v.Message))
		}
	}
	return u, errs, nil
}

// checkNamespace keeps a chosen login name from capturing another domain's
// identifiers. A scoped key may only choose names ending in @<its domain>
// (the answer does not depend on what exists elsewhere); any key is refused
// a name in another existing domain's namespace, and an unscoped key, which
// sees every domain anyway, a name that is the email of another domain's
// user. Resolution treats such a collision as ambiguous anyway
// (recovery.Resolve); refusing it here tells the admin at once.
func (s *Service) checkNamespace(ctx context.Context, scope Scope, d store.Domain, loginName string) ([]problem.FieldError, error) {
	owner := identifier.DomainOf(loginName)
	if scope.DomainID != nil {
		if owner != d.Name {
			return []problem.FieldError{fieldErr("login_name", "login_name_outside_domain",
				fmt.Sprintf("A key limited to the domain %s creates login names ending in @%s.", d.Name, d.Name))}, nil
		}
		return nil, nil
	}
	if owner != "" && owner != d.Name {
		_, err := s.store.DomainByName(ctx, owner)
		if err == nil {
			return []problem.FieldError{fieldErr("login_name", "login_name_in_other_domain",
				fmt.Sprintf("Login names ending in @%s belong to the domain %s.", owner, owner))}, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	taken, err := s.store.EmailInOtherDomain(ctx, loginName, d.ID)
	if err != nil {
		return nil, err
	}
	if taken {
		return []problem.FieldError{fieldErr("login_name", "login_name_is_email_elsewhere",
			"The login name is the email address of a user in another domain.")}, nil
	}
	return nil, nil
}

func (s *Service) hashOptional(ctx context.Context, secret *string) (*string, error) {
	if secret == nil {
		return nil, nil
	}
	h, err := s.hasher.Hash(ctx, *secret)
	if err != nil {
		return nil, fmt.Errorf("hash secret: %w", err)
	}
	return &h, nil
}

// ListFilter is the query of GET /v1/admin/users.
type ListFilter struct {
	Domain      string
	PasswordSet *bool
	After       *uuid.UUID
	Limit       int
}

// ListUsers pages through users, confined to the key's domain.
func (s *Service) ListUsers(ctx context.Context, scope Scope, f ListFilter) ([]store.User, error) {
	filter := store.UserFilter{PasswordSet: f.PasswordSet, AfterID: f.After, Limit: f.Limit}
	if f.Domain != "" {
		name, _ := identifier.DomainName(f.Domain)
		d, err := s.store.DomainByName(ctx, name)
		if errors.Is(err, store.ErrNotFound) || (err == nil && !scope.covers(d.ID)) {
			// The same answer for a domain outside the key's scope.
			return nil, problem.New(404, "domain_not_found", fmt.Sprintf("There is no domain named %s.", f.Domain))
		}
		if err != nil {
			return nil, err
		}
		filter.DomainID = &d.ID
	} else if scope.DomainID != nil {
		filter.DomainID = scope.DomainID
	}
	return s.store.ListUsers(ctx, filter)
}

// personName checks a first or last name and returns it trimmed.
func personName(field, value string) (string, []problem.FieldError) {
	if utf8.RuneCountInString(value) > 100 || hasControl(value) {
		return "", []problem.FieldError{fieldErr(field, "invalid_name", "Names are at most 100 characters, without line breaks or control characters.")}
	}
	return strings.TrimSpace(value), nil
}

func conflictProblem(constraint string, u store.NewUser, index int, batch bool) *problem.Problem {
	prefix := ""
	if batch {
		prefix = fmt.Sprintf("[%d].", index)
	}
	p := problem.New(409, "user_exists", "A user with the same login name or extension already exists.")
	switch constraint {
	case "users_login_name_key":
		p.Errors = []problem.FieldError{fieldErr(prefix+"login_name", "login_name_taken", fmt.Sprintf("The login name %s is taken.", u.LoginName))}
	case "users_domain_extension_key":
		p.Errors = []problem.FieldError{fieldErr(prefix+"extension", "extension_taken", fmt.Sprintf("The extension %s is taken in this domain.", u.Extension))}
	}
	return p
}

func domainNameByID(domains map[string]store.Domain, id uuid.UUID) string {
	for _, d := range domains {
		if d.ID == id {
			return d.Name
		}
	}
	return ""
}

func fieldErr(field, code, detail string) problem.FieldError {
	return problem.FieldError{Field: field, Code: code, Detail: detail}
}

// canonicalLocale parses a BCP 47 tag; empty gives def.
func canonicalLocale(raw, def string) (string, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return def, true
	}
	if len(raw) > 35 {
		return "", false
	}
	tag, err := language.Parse(raw)
	if err != nil {
		return "", false
	}
	return tag.String(), true
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// ErrAccountDisabled refuses to act for a disabled account (an admin reset
// or welcome would send a link nobody can use).
var ErrAccountDisabled = problem.New(409, "account_disabled", "The account is disabled; enable it first.")

// User statuses.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// SetStatus disables or enables a user (POST /v1/admin/users/{id}/disable
// and …/enable) and returns it. Disabling revokes every live token and
// session of the user in the same transaction and moves its credential
// version on, so that neither a link, a session nor a login in flight
// outlives it; enabling therefore brings none of them back. Setting the
// status the user already has changes nothing and records nothing. A user
// outside the key's scope is store.ErrNotFound, like an unknown one.
func (s *Service) SetStatus(ctx context.Context, scope Scope, id uuid.UUID, status string, meta audit.Meta) (store.User, error) {
	var u store.User
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		if u, err = s.store.LockUser(ctx, tx, id); err != nil {
			return err
		}
		if !scope.covers(u.DomainID) {
			return store.ErrNotFound
		}
		now := s.now()
		changed, err := s.store.SetUserStatus(ctx, tx, id, status, now)
		if err != nil || !changed {
			return err
		}
		u.Status = status
		kind := audit.AccountEnabled
		if status == StatusDisabled {
			kind = audit.AccountDisabled
			if err := s.store.RevokeUserTokens(ctx, tx, id, store.TokenPurposes(), now); err != nil {
				return err
			}
			if err := s.store.RevokeOtherSessions(ctx, tx, id, nil, now); err != nil {
				return err
			}
		}
		return audit.Record(ctx, s.store, tx, kind, &u.ID, &u.DomainID, meta, nil)
	})
	return u, err
}
