// Package mailtmpl renders Latchkey's localized emails (SPEC §5.5, §5.7).
//
// A Template is three strings (subject, text part, HTML part) containing
// placeholders such as $FIRSTNAME or $Url$. Render substitutes them in a
// single pass, with no logic: values are HTML-escaped in the HTML part,
// inserted as they are in the text part, and have their line breaks turned
// into spaces in the subject, so no value can add a mail header. A value is
// never scanned for placeholders, so a first name of "$LINK" stays "$LINK".
//
// The built-in templates (package templates) are parsed once at start-up
// into a Catalog, which picks the best locale for a user with
// golang.org/x/text/language (fr-CA → fr → en). Admin overrides, stored
// elsewhere, go through Validate before they are saved.
package mailtmpl

import (
	"errors"
	"slices"
)

// Template names, fixed by SPEC §5.7. They are the directory names under
// templates/email and the {name} of /v1/admin/templates/{name}/{locale}.
const (
	PasswordReset      = "password_reset"
	Welcome            = "welcome"
	LoginName          = "login_name"
	PasswordChanged    = "password_changed"
	LegacyResetRequest = "legacy_reset_request"
	LegacyNewPassword  = "legacy_new_password"
	RolloutReminder    = "rollout_reminder"
)

// names lists every template name the service knows, whether or not a
// built-in exists yet.
var names = []string{
	PasswordReset, Welcome, LoginName, PasswordChanged,
	LegacyResetRequest, LegacyNewPassword, RolloutReminder,
}

// KnownNames returns every template name of SPEC §5.7, sorted. A name may be
// known before its built-in template ships; Catalog.Names lists those that
// exist.
func KnownNames() []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return out
}

// IsKnownName reports whether name is one of the SPEC §5.7 template names.
func IsKnownName(name string) bool { return slices.Contains(names, name) }

var (
	// ErrUnknownTemplate is wrapped when a template name is not one of
	// KnownNames, or has no built-in template.
	ErrUnknownTemplate = errors.New("mailtmpl: unknown template")
	// ErrInvalidTemplate is wrapped when a template cannot be used: see
	// Validate and Render. *ValidationError unwraps to it.
	ErrInvalidTemplate = errors.New("mailtmpl: invalid template")
)
