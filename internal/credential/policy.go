package credential

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// JSON field names the violations point at (SPEC §5 request bodies).
const (
	FieldNewPassword     = "new_password"
	FieldConfirmPassword = "confirm_password"
	FieldNewPIN          = "new_pin"
)

// Violation codes: stable identifiers for clients and translations.
const (
	CodePasswordLength     = "password_length"      // Params: min, max
	CodeConfirmLength      = "confirm_length"       // Params: min, max
	CodePasswordMismatch   = "password_mismatch"    // no Params
	CodePasswordIsIdentity = "password_is_identity" // no Params
	CodePasswordCommon     = "password_common"      // no Params
	CodePINDigits          = "pin_digits"           // no Params
	CodePINLength          = "pin_length"           // Params: min, max
	CodePINBlacklisted     = "pin_blacklisted"      // no Params
)

// Violation is one broken rule. Code and Params are what a translation needs
// (Params holds ints under "min" and "max" for the length codes, nil
// otherwise); Message is the English text with Params filled in.
type Violation struct {
	Field   string
	Code    string
	Message string
	Params  map[string]any
}

// PolicyConfig holds the limits of SPEC §4, in Unicode code points for the
// password and digits for the PIN. Zero values take the defaults.
type PolicyConfig struct {
	PasswordMinLength int // default 8
	PasswordMaxLength int // default 64
	PINMinLength      int // default 4
	PINMaxLength      int // default 10
}

// Identity is what a user must not choose as a secret.
type Identity struct {
	LoginName string
	Extension string
	Email     string
}

// Policy checks new passwords and PINs against SPEC §4. It is immutable and
// safe for concurrent use.
type Policy struct {
	cfg             PolicyConfig
	commonPasswords sortedList
	commonPINs      sortedList
}

// NewPolicy fills in the defaults of cfg, validates it and loads the
// embedded lists.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	if cfg.PasswordMinLength == 0 {
		cfg.PasswordMinLength = 8
	}
	if cfg.PasswordMaxLength == 0 {
		cfg.PasswordMaxLength = 64
	}
	if cfg.PINMinLength == 0 {
		cfg.PINMinLength = 4
	}
	if cfg.PINMaxLength == 0 {
		cfg.PINMaxLength = 10
	}
	if err := checkRange("password", cfg.PasswordMinLength, cfg.PasswordMaxLength); err != nil {
		return nil, err
	}
	if err := checkRange("PIN", cfg.PINMinLength, cfg.PINMaxLength); err != nil {
		return nil, err
	}

	passwords, err := parseSortedList("common_passwords.txt", commonPasswordsFile)
	if err != nil {
		return nil, fmt.Errorf("credential: load common passwords: %w", err)
	}
	pins, err := parseSortedList("common_pins.txt", commonPINsFile)
	if err != nil {
		return nil, fmt.Errorf("credential: load common PINs: %w", err)
	}
	return &Policy{cfg: cfg, commonPasswords: passwords, commonPINs: pins}, nil
}

func checkRange(what string, minLen, maxLen int) error {
	if minLen < 1 {
		return fmt.Errorf("%w: %s minimum length %d is below 1", ErrInvalidConfig, what, minLen)
	}
	if minLen > maxLen {
		return fmt.Errorf("%w: %s minimum length %d is above the maximum %d", ErrInvalidConfig, what, minLen, maxLen)
	}
	if maxLen > MaxSecretLength {
		// Login refuses longer secrets: the policy must not accept them.
		return fmt.Errorf("%w: %s maximum length %d is above %d", ErrInvalidConfig, what, maxLen, MaxSecretLength)
	}
	return nil
}

// Config returns the limits in force, defaults filled in.
func (p *Policy) Config() PolicyConfig { return p.cfg }

// CheckPassword checks a new password and its confirmation as the forms of
// SPEC §5 send them. It returns nil when the password may be set; otherwise
// the violations in a stable order: new_password first, then
// confirm_password. The mismatch is only reported when both lengths are
// right, so each field carries one message about the same mistake.
func (p *Policy) CheckPassword(newPassword, confirmPassword string, id Identity) []Violation {
	vs := p.CheckPasswordField(FieldNewPassword, newPassword, id)
	if !p.passwordLengthOK(confirmPassword) {
		vs = append(vs, p.lengthViolation(FieldConfirmPassword, CodeConfirmLength,
			"Confirm password must be between %d and %d characters long.",
			p.cfg.PasswordMinLength, p.cfg.PasswordMaxLength))
	}
	// Compared byte for byte: both come from the same request, and any
	// difference means the user did not type what they think they typed.
	if newPassword != confirmPassword && p.passwordLengthOK(newPassword) && p.passwordLengthOK(confirmPassword) {
		vs = append(vs, Violation{
			Field:   FieldConfirmPassword,
			Code:    CodePasswordMismatch,
			Message: "New password and Confirm new password must be the same.",
		})
	}
	return vs
}

// CheckPasswordField checks a password that comes without a confirmation
// (an admin creating a user sends "password"), reporting under field.
// Identity and commonness are only judged once the length is right: a
// too-short password needs one message, not three.
func (p *Policy) CheckPasswordField(field, password string, id Identity) []Violation {
	if !p.passwordLengthOK(password) {
		return []Violation{p.lengthViolation(field, CodePasswordLength,
			"New password must be between %d and %d characters long.",
			p.cfg.PasswordMinLength, p.cfg.PasswordMaxLength)}
	}
	var vs []Violation
	if isIdentity(password, id) {
		vs = append(vs, Violation{
			Field:   field,
			Code:    CodePasswordIsIdentity,
			Message: "The password must not be your login name, extension or email address.",
		})
	}
	if p.isCommonPassword(password) {
		vs = append(vs, Violation{
			Field:   field,
			Code:    CodePasswordCommon,
			Message: "This password is too common. Choose another one.",
		})
	}
	return vs
}

// CheckPIN checks a new voicemail PIN sent as "new_pin".
func (p *Policy) CheckPIN(pin string, id Identity) []Violation {
	return p.CheckPINField(FieldNewPIN, pin, id)
}

// CheckPINField is CheckPIN for requests that name the field otherwise
// (an admin creating a user sends "pin"). Digits and length are both
// reported; the blacklist is only consulted for a PIN that passes them.
func (p *Policy) CheckPINField(field, pin string, id Identity) []Violation {
	var vs []Violation
	digitsOnly := isDigits(pin)
	if !digitsOnly {
		vs = append(vs, Violation{Field: field, Code: CodePINDigits, Message: "The PIN must contain digits only."})
	}
	// Code points, like passwords: "١٢٣٤" is four characters, and not digits.
	n := utf8.RuneCountInString(pin)
	if n < p.cfg.PINMinLength || n > p.cfg.PINMaxLength {
		vs = append(vs, p.lengthViolation(field, CodePINLength, "The PIN must be between %d and %d digits long.",
			p.cfg.PINMinLength, p.cfg.PINMaxLength))
	}
	if len(vs) == 0 && p.isBlacklistedPIN(pin, id) {
		vs = append(vs, Violation{
			Field:   field,
			Code:    CodePINBlacklisted,
			Message: "This PIN is too easy to guess. Choose another one.",
		})
	}
	return vs
}

func (p *Policy) passwordLengthOK(s string) bool {
	n := utf8.RuneCountInString(s)
	return n >= p.cfg.PasswordMinLength && n <= p.cfg.PasswordMaxLength
}

func (p *Policy) lengthViolation(field, code, format string, minLen, maxLen int) Violation {
	return Violation{
		Field:   field,
		Code:    code,
		Message: fmt.Sprintf(format, minLen, maxLen),
		Params:  map[string]any{"min": minLen, "max": maxLen},
	}
}

// isIdentity compares trimmed and case-folded, as users type their login
// name or email with stray capitals and spaces. The login name's local part
// counts too: for the default login name "1001@domain" it is the extension,
// and for a chosen one such as "jdoe@acme" it is the name itself.
func isIdentity(password string, id Identity) bool {
	pw := strings.TrimSpace(password)
	candidates := []string{id.LoginName, localPart(id.LoginName), id.Extension, id.Email, localPart(id.Email)}
	for _, c := range candidates {
		c = strings.TrimSpace(c)
		if c != "" && strings.EqualFold(pw, c) {
			return true
		}
	}
	return false
}

// localPart returns what precedes the last "@", or "" when there is none.
func localPart(s string) string {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return ""
	}
	return s[:i]
}

// isCommonPassword matches the lowered, trimmed password exactly against the
// list. Variants are not derived (suffixed digits, leet): the frequent ones
// are on the list already (password1, p@ssw0rd, qwerty123). A single
// repeated character is rejected too, because the zxcvbn-derived list omits
// repeats ("aaaaaaaa"), which zxcvbn catches with a pattern instead.
func (p *Policy) isCommonPassword(password string) bool {
	key := strings.ToLower(strings.TrimSpace(password))
	return p.commonPasswords.contains(key) || sameRune(key) || sameRune(password)
}

// isBlacklistedPIN assumes pin is all ASCII digits.
func (p *Policy) isBlacklistedPIN(pin string, id Identity) bool {
	if ext := strings.TrimSpace(id.Extension); ext != "" && pin == ext {
		return true
	}
	return sameRune(pin) || isDigitRun(pin) || p.commonPINs.contains(pin)
}

// sameRune reports whether s has at least two characters, all the same.
func sameRune(s string) bool {
	first, size := utf8.DecodeRuneInString(s)
	if size == 0 || size == len(s) {
		return false
	}
	for _, r := range s[size:] {
		if r != first {
			return false
		}
	}
	return true
}

// isDigitRun reports whether each digit is one above (1234, 0123) or one
// below (4321, 9876) the previous, at least two digits long. Runs do not
// wrap: 7890 is not one (it is on the shipped list instead, if common).
func isDigitRun(pin string) bool {
	if len(pin) < 2 {
		return false
	}
	step := int(pin[1]) - int(pin[0])
	if step != 1 && step != -1 {
		return false
	}
	for i := 2; i < len(pin); i++ {
		if int(pin[i])-int(pin[i-1]) != step {
			return false
		}
	}
	return true
}

// isDigits reports ASCII digits only: keypads dial nothing else.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// MaxSecretLength is the most code points any secret may have: the ceiling
// of PASSWORD_MAX_LENGTH and PIN_MAX_LENGTH. Login refuses longer input
// without hashing it; since no policy can accept a longer secret, nothing the
// policy accepted is ever refused there.
const MaxSecretLength = 1024

// PlausibleSecret reports whether s could be a stored secret: at least one
// and at most MaxSecretLength code points. It trims nothing: white space is
// part of a password (NIST SP 800-63B §5.1.1.2), and " \t" is a secret, not
// an empty one.
func PlausibleSecret(s string) bool {
	return s != "" && (len(s) <= MaxSecretLength || utf8.RuneCountInString(s) <= MaxSecretLength)
}
