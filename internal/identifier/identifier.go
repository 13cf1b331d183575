// Package identifier says, once for every door, what each kind of
// identifier may be: login names, email addresses, the identifier typed
// into "forgot password" (either of those), extensions and domain names.
// Admin creation, login, recovery and the events a portal backend publishes
// all validate with these functions, so a name accepted when an account is
// created can always be typed at login and recovery, and nothing refused at
// one door is accepted at another.
//
// Every function takes the raw value as typed or sent, and returns its
// canonical form: surrounding white space trimmed and, for the free-text
// kinds, Unicode NFC, so that "é" typed as one code point or as "e" plus a
// combining accent is one name. Lengths are counted in bytes of UTF-8, the
// unit of the limits they come from (RFC 5321 §4.5.3.1).
package identifier

import (
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Limits, in bytes of UTF-8.
const (
	// MaxEmailBytes is RFC 5321's 256-octet path less its angle brackets.
	MaxEmailBytes = 254
	// MaxLoginNameBytes equals MaxEmailBytes: a login name may be an email
	// address, and every login name fits wherever an address does.
	MaxLoginNameBytes = MaxEmailBytes
	// MaxDomainNameBytes is DNS's limit on a name (RFC 1035 §2.3.4).
	MaxDomainNameBytes = 253
)

// Rules in words, for the field errors that refuse a value.
const (
	LoginNameRule  = "The login name must be 1 to 254 bytes without spaces, control or invisible characters, or any of , ; < > \" \\."
	EmailRule      = "The email address is not valid."
	ExtensionRule  = "The extension must be 1 to 32 letters, digits, dots, hyphens or underscores."
	DomainNameRule = "The domain name must be letters, digits, hyphens and dots, such as acme.11111.service."
)

// forbiddenInName are printable characters no login name may hold: list
// separators (a@x, b@y), the address brackets and quotes that would let a
// name smuggle a second address or header into an email, and the backslash
// that escapes them.
const forbiddenInName = `,;<>"\`

// LoginName returns the canonical form of a login name, or false when raw
// cannot be one: empty, over MaxLoginNameBytes, or holding white space,
// control or format (invisible) characters, U+FFFD (what a broken byte
// sequence decodes to) or a character of forbiddenInName.
func LoginName(raw string) (string, bool) {
	s := canonical(raw)
	if s == "" || len(s) > MaxLoginNameBytes {
		return "", false
	}
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
			strings.ContainsRune(forbiddenInName, r) {
			return "", false
		}
	}
	return s, true
}

// Email returns the canonical form of an email address, or false when raw is
// not a bare address (RFC 5322 addr-spec, no display name, no comments) of at
// most MaxEmailBytes without control characters.
//
// International addresses are accepted (RFC 6531: anna@bücher.example,
// 用户@例子.广告), provided a non-ASCII domain has an A-label (IDNA2008
// lookup profile, UTS #46) with which the address still fits MaxEmailBytes:
// that is the name a mail server without SMTPUTF8 is given, and the name
// DNS resolves. A non-ASCII local part is accepted too, although only a
// server offering SMTPUTF8 can deliver to it (the mailer fails such a
// delivery permanently, saying so, with any other server).
func Email(raw string) (string, bool) {
	s := canonical(raw)
	if s == "" || len(s) > MaxEmailBytes || strings.ContainsFunc(s, unicode.IsControl) ||
		strings.ContainsRune(s, utf8.RuneError) {
		return "", false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || !strings.Contains(s, "@") {
		return "", false
	}
	at := strings.LastIndexByte(s, '@')
	if domain := s[at+1:]; !isASCII(domain) {
		ascii, err := idna.Lookup.ToASCII(domain)
		if err != nil || at+1+len(ascii) > MaxEmailBytes {
			return "", false
		}
	}
	return s, true
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Recovery returns the canonical form of what a user types to name their
// account ("Username or email"): a login name or an email address.
func Recovery(raw string) (string, bool) {
	if s, ok := LoginName(raw); ok {
		return s, true
	}
	return Email(raw)
}

var extensionPattern = regexp.MustCompile(`^[0-9A-Za-z._-]{1,32}$`)

// Extension returns a trimmed extension, or false when it is not 1 to 32
// ASCII letters, digits, dots, hyphens or underscores.
func Extension(raw string) (string, bool) {
	s := strings.TrimSpace(raw)
	return s, extensionPattern.MatchString(s)
}

var domainNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// DomainName returns a tenant's name in lower case, or false when it is not
// a DNS-like name of at most MaxDomainNameBytes.
func DomainName(raw string) (string, bool) {
	s := strings.ToLower(strings.TrimSpace(raw))
	return s, len(s) <= MaxDomainNameBytes && domainNamePattern.MatchString(s)
}

// DomainOf returns what follows the last "@" of a login name in lower case,
// or "" when there is none: the domain whose namespace the name is in
// (default login names are extension@domain).
func DomainOf(loginName string) string {
	i := strings.LastIndexByte(loginName, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(loginName[i+1:])
}

func canonical(raw string) string {
	return norm.NFC.String(strings.TrimSpace(raw))
}
