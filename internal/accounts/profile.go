package accounts

import (
	"context"
	"errors"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// User finds one user (GET /v1/admin/users/{id}). A user outside the key's
// scope is store.ErrNotFound, exactly like an unknown one.
func (s *Service) User(ctx context.Context, scope Scope, id uuid.UUID) (store.User, error) {
	u, err := s.store.UserWithDomain(ctx, nil, id)
	if err == nil && !scope.covers(u.DomainID) {
		return store.User{}, store.ErrNotFound
	}
	return u, err
}

// Domain finds one tenant (GET /v1/admin/domains/{id}). A domain outside the
// key's scope is store.ErrNotFound, exactly like an unknown one.
func (s *Service) Domain(ctx context.Context, scope Scope, id uuid.UUID) (store.Domain, error) {
	d, err := s.store.DomainByID(ctx, id)
	if err == nil && !scope.covers(d.ID) {
		return store.Domain{}, store.ErrNotFound
	}
	return d, err
}

// ListDomains pages through tenants in id order, after the given id when
// set, at most limit of them; a key limited to a domain sees only that one.
func (s *Service) ListDomains(ctx context.Context, scope Scope, after *uuid.UUID, limit int) ([]store.Domain, error) {
	return s.store.ListDomains(ctx, store.DomainFilter{OnlyID: scope.DomainID, AfterID: after, Limit: limit})
}

// Field is one member of a JSON merge patch (RFC 7396): absent (Set false,
// leave the field as it is), null (Set and Null), or a value.
type Field struct {
	Set   bool
	Null  bool
	Value string
}

// UserPatch is the body of PATCH /v1/admin/users/{id}: the fields an admin
// changes. The login name, the domain and the secrets are not among them.
type UserPatch struct {
	FirstName Field
	LastName  Field
	Email     Field
	Locale    Field
	Extension Field
}

// ErrDeliveryInFlight refuses an email change while a mailer may be sending
// one of the user's emails to the current address (see UpdateUser).
var ErrDeliveryInFlight = func() *problem.Problem {
	p := problem.New(409, "delivery_in_progress",
		"An email to the user's current address is being sent right now; change the address again in a few seconds.")
	p.RetryAfter = 2
	return p
}()

// emailLinkPurposes are the links an email carries (SPEC §3: changing the
// email revokes the user's outstanding reset and welcome links; a legacy
// confirmation link is a reset link too). A set-up token is not among them:
// it answered a login with the PIN, not an email.
var emailLinkPurposes = []string{"reset", "welcome", "legacy_confirm"}

// UpdateUser applies a merge patch to a user's profile and returns the user
// as it now is. Validation is creation's, every fault at once (422): names
// at most 100 characters without control characters (null clears them),
// an email (identifier.Email; null is "required"), an extension
// (identifier.Extension, unique within the domain: 409 user_exists with
// extension_taken; null is "required"), a BCP 47 locale (null or "" gives
// the domain's locale, as at creation). The login name stays what it is,
// even when it was the default extension@domain.
//
// It runs under the user's row lock (store.LockUser), the first lock of
// every credential change. Changing the email revokes the user's live
// reset, welcome and legacy links in the same transaction (SPEC §3), and
// is refused with ErrDeliveryInFlight while a mailer holds a claim on one of
// the user's deliveries: such a send may still reach the old address, and
// could not be recalled once the change committed. Deliveries claimed
// after the change see the new address and skip those recorded for the
// old one (delivery.Mailer). The credential version is not moved on: an
// email is no secret, so sessions and logins in flight stay valid.
//
// A change is audited (audit.AccountUpdated, naming the fields); a patch that
// changes nothing records nothing. A user outside the key's scope is
// store.ErrNotFound, like an unknown one.
func (s *Service) UpdateUser(ctx context.Context, scope Scope, id uuid.UUID, patch UserPatch, meta audit.Meta) (store.User, error) {
	want, resetLocale, errs := validatePatch(patch)
	if len(errs) > 0 {
		return store.User{}, problem.Validation(errs)
	}
	var u store.User
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		old, err := s.store.LockUser(ctx, tx, id)
		if err != nil {
			return err
		}
		if !scope.covers(old.DomainID) {
			return store.ErrNotFound
		}
		u = old
		p := store.Profile{FirstName: old.FirstName, LastName: old.LastName, Email: old.Email, Locale: old.Locale, Extension: old.Extension}
		apply(&p.FirstName, want.FirstName)
		apply(&p.LastName, want.LastName)
		apply(&p.Email, want.Email)
		apply(&p.Locale, want.Locale)
		apply(&p.Extension, want.Extension)
		if resetLocale {
			d, err := s.store.DomainByID(ctx, old.DomainID)
			if err != nil {
				return err
			}
			p.Locale = d.Locale
		}
		changed := changedFields(old, p)
		if len(changed) == 0 {
			return nil
		}
		now := s.now()
		emailChanged := p.Email != old.Email
		if emailChanged {
			inFlight, err := s.store.UserHasDeliveryInFlight(ctx, tx, id, now.Add(-s.cfg.DeliveryClaimLease))
			if err != nil {
				return err
			}
			if inFlight {
				return ErrDeliveryInFlight
			}
		}
		if u, err = s.store.UpdateProfile(ctx, tx, id, p, now); err != nil {
			return err
		}
		u.DomainName = old.DomainName
		detail := map[string]any{"fields": changed}
		if emailChanged {
			if err := s.store.RevokeUserTokens(ctx, tx, id, emailLinkPurposes, now); err != nil {
				return err
			}
			detail["links_revoked"] = true
		}
		return audit.Record(ctx, s.store, tx, audit.AccountUpdated, &u.ID, &u.DomainID, meta, detail)
	})
	var conflict *store.ConflictError
	if errors.As(err, &conflict) {
		return store.User{}, conflictProblem(conflict.Constraint, store.NewUser{Extension: want.Extension.Value}, 0, false)
	}
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// validatePatch checks every field sent, as creation does, and returns them
// canonical; resetLocale reports a locale sent as null or "" (the domain's).
func validatePatch(in UserPatch) (out UserPatch, resetLocale bool, errs []problem.FieldError) {
	out = in
	for _, f := range []struct {
		name  string
		field *Field
	}{{"first_name", &out.FirstName}, {"last_name", &out.LastName}} {
		if !f.field.Set {
			continue
		}
		if f.field.Null {
			// Names may be empty, so null (RFC 7396: remove) clears one.
			f.field.Null, f.field.Value = false, ""
			continue
		}
		var fe []problem.FieldError
		f.field.Value, fe = personName(f.name, f.field.Value)
		errs = append(errs, fe...)
	}
	if f := &out.Email; f.Set {
		var ok bool
		if f.Null || strings.TrimSpace(f.Value) == "" {
			errs = append(errs, fieldErr("email", "required", "The email address is required; it cannot be removed."))
		} else if f.Value, ok = identifier.Email(f.Value); !ok {
			errs = append(errs, fieldErr("email", "invalid_email", identifier.EmailRule))
		}
	}
	if f := &out.Extension; f.Set {
		var ok bool
		if f.Null || strings.TrimSpace(f.Value) == "" {
			errs = append(errs, fieldErr("extension", "required", "The extension is required; it cannot be removed."))
		} else if f.Value, ok = identifier.Extension(f.Value); !ok {
			errs = append(errs, fieldErr("extension", "invalid_extension", identifier.ExtensionRule))
		}
	}
	if f := &out.Locale; f.Set {
		locale, ok := "", true
		if !f.Null {
			locale, ok = canonicalLocale(f.Value, "")
		}
		switch {
		case !ok:
			errs = append(errs, fieldErr("locale", "invalid_locale", "The locale must be a BCP 47 language tag, such as en or fr-CA."))
		case locale == "":
			// As at creation: no locale is the domain's.
			resetLocale, f.Set = true, false
		default:
			f.Value = locale
		}
	}
	return out, resetLocale, errs
}

func apply(dst *string, f Field) {
	if f.Set {
		*dst = f.Value
	}
}

// changedFields names the fields p changes of u, in the API's names.
func changedFields(u store.User, p store.Profile) []string {
	var out []string
	for _, c := range []struct {
		name     string
		old, new string
	}{
		{"first_name", u.FirstName, p.FirstName}, {"last_name", u.LastName, p.LastName}, {"email", u.Email, p.Email},
		{"locale", u.Locale, p.Locale}, {"extension", u.Extension, p.Extension},
	} {
		if c.old != c.new {
			out = append(out, c.name)
		}
	}
	return out
}
