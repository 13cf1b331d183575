// Package accounts owns tenants and users as admins create and list them:
// validation of what comes in, hashing of initial secrets, and the rules
// that make a login name unique.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/text/language"

	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// MaxImport bounds one POST /v1/admin/users array; larger imports are sent
// in several requests.
const MaxImport = 500

// Service creates and lists domains and users.
type Service struct {
	store  *store.Store
	hasher *credential.Hasher
	policy *credential.Policy
}

// New builds the service.
func New(st *store.Store, hasher *credential.Hasher, policy *credential.Policy) *Service {
	return &Service{store: st, hasher: hasher, policy: policy}
}

// Scope limits what an admin key may touch: nil DomainID means every domain.
type Scope struct{ DomainID *uuid.UUID }

// ErrForbidden means the admin key's scope does not cover the request.
var ErrForbidden = errors.New("outside the admin key's domain")

// DomainInput is the body of POST /v1/admin/domains.
type DomainInput struct {
	Name   string `json:"name"`
	Locale string `json:"locale"`
}

var domainName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// CreateDomain validates and stores a tenant. Names are kept lower-case so
// that uniqueness ignores case.
func (s *Service) CreateDomain(ctx context.Context, scope Scope, in DomainInput) (store.Domain, error) {
	if scope.DomainID != nil {
		return store.Domain{}, ErrForbidden
	}
	var errs []problem.FieldError
	name := strings.ToLower(strings.TrimSpace(in.Name))
	switch {
	case name == "":
		errs = append(errs, fieldErr("name", "required", "The domain name is required."))
	case len(name) > 253 || !domainName.MatchString(name):
		errs = append(errs, fieldErr("name", "invalid_domain_name",
			"The domain name must be letters, digits, hyphens and dots, such as acme.11111.service."))
	}
	locale, ok := canonicalLocale(in.Locale, "en")
	if !ok {
		errs = append(errs, fieldErr("locale", "invalid_locale", "The locale must be a BCP 47 language tag, such as en or fr-CA."))
	}
	if len(errs) > 0 {
		return store.Domain{}, problem.Validation(errs)
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

var extensionPattern = regexp.MustCompile(`^[0-9A-Za-z._-]{1,32}$`)

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

	domainKey := strings.ToLower(strings.TrimSpace(in.Domain))
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
	if known && scope.DomainID != nil && *scope.DomainID != d.ID {
		return u, nil, ErrForbidden
	}
	u.DomainID = d.ID

	u.Extension = strings.TrimSpace(in.Extension)
	if u.Extension == "" {
		errs = append(errs, fieldErr("extension", "required", "The extension is required."))
	} else if !extensionPattern.MatchString(u.Extension) {
		errs = append(errs, fieldErr("extension", "invalid_extension", "The extension must be 1 to 32 letters, digits, dots, hyphens or underscores."))
	}

	u.Email = strings.TrimSpace(in.Email)
	if u.Email == "" {
		errs = append(errs, fieldErr("email", "required", "The email address is required."))
	} else if !validEmail(u.Email) {
		errs = append(errs, fieldErr("email", "invalid_email", "The email address is not valid."))
	}

	for _, f := range []struct{ name, value string }{{"first_name", in.FirstName}, {"last_name", in.LastName}} {
		if utf8.RuneCountInString(f.value) > 100 || hasControl(f.value) {
			errs = append(errs, fieldErr(f.name, "invalid_name", "Names are at most 100 characters, without line breaks or control characters."))
		}
	}
	u.FirstName, u.LastName = strings.TrimSpace(in.FirstName), strings.TrimSpace(in.LastName)

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

	u.LoginName = strings.TrimSpace(in.LoginName)
	if u.LoginName == "" && u.Extension != "" && domainKey != "" {
		u.LoginName = u.Extension + "@" + domainKey
	}
	if in.LoginName != "" && !validLoginName(u.LoginName) {
		errs = append(errs, fieldErr("login_name", "invalid_login_name", "The login name must be 1 to 254 characters without spaces, commas, semicolons or control characters."))
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
		d, err := s.store.DomainByName(ctx, strings.ToLower(f.Domain))
		if errors.Is(err, store.ErrNotFound) {
			return nil, problem.New(404, "domain_not_found", fmt.Sprintf("There is no domain named %s.", f.Domain))
		}
		if err != nil {
			return nil, err
		}
		if scope.DomainID != nil && *scope.DomainID != d.ID {
			return nil, ErrForbidden
		}
		filter.DomainID = &d.ID
	} else if scope.DomainID != nil {
		filter.DomainID = scope.DomainID
	}
	return s.store.ListUsers(ctx, filter)
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

func validEmail(s string) bool {
	if len(s) > 254 || hasControl(s) {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s && strings.Contains(s, "@")
}

func validLoginName(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > 254 || strings.ContainsAny(s, ",;") {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
