package mailtmpl

import (
	"fmt"
	"html"
	"iter"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Template is one email in one language: the subject line, the text/plain
// part and the text/html part, with placeholders. The JSON names are those
// of PUT /v1/admin/templates/{name}/{locale}.
type Template struct {
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

// Rendered is a Template with its placeholders replaced, ready to send.
// Subject is a single trimmed line; HTML is empty when the template had no
// HTML part.
type Rendered struct {
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

// Vars are the values of the placeholders (SPEC §5.7). Render inserts them
// as given: a caller that wants a greeting without an empty first name puts
// a fallback (the login name, say) in FirstName, since templates have no
// logic.
type Vars struct {
	FirstName string // $FIRSTNAME
	LastName  string // $LASTNAME
	Username  string // $USERNAME: the login name
	Email     string // $EMAIL
	Domain    string // $DOMAIN
	Extension string // $EXTENSION
	Link      string // $LINK, alias $URL
	// ExpiresMinutes is the lifetime of Link in minutes ($EXPIRES_MINUTES).
	ExpiresMinutes int
	// Password is $PASSWORD, the generated password of legacy_new_password;
	// every other template refuses the placeholder.
	Password string
}

// Placeholder names, as matched after upper-casing.
const (
	phFirstName      = "FIRSTNAME"
	phLastName       = "LASTNAME"
	phUsername       = "USERNAME"
	phEmail          = "EMAIL"
	phDomain         = "DOMAIN"
	phExtension      = "EXTENSION"
	phLink           = "LINK"
	phURL            = "URL"
	phExpiresMinutes = "EXPIRES_MINUTES"
	phPassword       = "PASSWORD"
)

var placeholderNames = []string{
	phFirstName, phLastName, phUsername, phEmail, phDomain, phExtension,
	phLink, phURL, phExpiresMinutes, phPassword,
}

func isPlaceholder(name string) bool { return slices.Contains(placeholderNames, name) }

// value is the raw value of placeholder name (upper case) for template
// tmpl; ok is false for an unknown placeholder, and for $PASSWORD outside
// legacy_new_password, so it can never leak into another email.
func (v *Vars) value(tmpl, name string) (val string, ok bool) {
	switch name {
	case phFirstName:
		return v.FirstName, true
	case phLastName:
		return v.LastName, true
	case phUsername:
		return v.Username, true
	case phEmail:
		return v.Email, true
	case phDomain:
		return v.Domain, true
	case phExtension:
		return v.Extension, true
	case phLink, phURL:
		return v.Link, true
	case phExpiresMinutes:
		return strconv.Itoa(v.ExpiresMinutes), true
	case phPassword:
		return v.Password, tmpl == LegacyNewPassword
	}
	return "", false
}

// Render replaces the placeholders of t, the template called name, with the
// values in v, in one pass: a value is never scanned again, so a value
// holding "$LINK" is inserted as the text "$LINK". Values are HTML-escaped
// in the HTML part, inserted verbatim in the text part, and have every line
// break or other control character replaced by a space in the subject. An
// unknown $WORD is left as written (a price such as "$5" survives).
//
// Render fails with ErrUnknownTemplate for a name outside KnownNames, and
// with a *ValidationError (ErrInvalidTemplate) when the subject holds a line
// break or $PASSWORD appears where it is not allowed. Validate is stricter;
// use it before storing an override.
func Render(name string, t Template, v Vars) (Rendered, error) {
	if !IsKnownName(name) {
		return Rendered{}, fmt.Errorf("render template %q: %w", name, ErrUnknownTemplate)
	}
	if issues := check(name, t, false); len(issues) > 0 {
		return Rendered{}, &ValidationError{Name: name, Issues: issues}
	}
	subject := func(ph string) (string, bool) {
		val, ok := v.value(name, ph)
		return oneLine(val), ok
	}
	text := func(ph string) (string, bool) { return v.value(name, ph) }
	htmlPart := func(ph string) (string, bool) {
		val, ok := v.value(name, ph)
		return html.EscapeString(val), ok
	}
	return Rendered{
		Subject: strings.TrimSpace(expand(strings.TrimSpace(t.Subject), subject)),
		Text:    expand(t.Text, text),
		HTML:    expand(t.HTML, htmlPart),
	}, nil
}

// token is one placeholder as written in a template.
type token struct {
	start, end int    // s[start:end] is the placeholder as written: "$Url$"
	name       string // its name, upper-cased: "URL"
}

// tokens yields the placeholders of s from left to right. A placeholder is
// "$" followed by an ASCII letter, then letters, digits or underscores; one
// closing "$" belongs to it ("$Url$") unless a letter follows that "$", in
// which case the "$" opens the next placeholder ("$FIRSTNAME$LASTNAME" is
// two). "$5", "$ " and a lone "$" are not placeholders.
func tokens(s string) iter.Seq[token] {
	return func(yield func(token) bool) {
		for i := 0; i < len(s); {
			j := strings.IndexByte(s[i:], '$')
			if j < 0 {
				return
			}
			start := i + j
			k := start + 1
			if k == len(s) || !isLetter(s[k]) {
				i = k
				continue
			}
			for k < len(s) && (isLetter(s[k]) || isDigit(s[k]) || s[k] == '_') {
				k++
			}
			end := k
			if end < len(s) && s[end] == '$' && (end+1 == len(s) || !isLetter(s[end+1])) {
				end++
			}
			if !yield(token{start: start, end: end, name: strings.ToUpper(s[start+1 : k])}) {
				return
			}
			i = end
		}
	}
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }

// expand copies s, replacing each placeholder for which value answers ok.
// The values are written out and never looked at again: one pass.
func expand(s string, value func(name string) (string, bool)) string {
	var b strings.Builder
	last := 0
	for t := range tokens(s) {
		val, ok := value(t.name)
		if !ok {
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(s) + len(val))
		}
		b.WriteString(s[last:t.start])
		b.WriteString(val)
		last = t.end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// isBreak reports the runes that must not reach a header: control
// characters (CR, LF, tab, NUL, NEL...) and the Unicode line and paragraph
// separators.
func isBreak(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// oneLine replaces each run of isBreak runes in s with one space.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isBreak) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	inBreak := false
	for _, r := range s {
		if isBreak(r) {
			if !inBreak {
				b.WriteByte(' ')
			}
			inBreak = true
			continue
		}
		inBreak = false
		b.WriteRune(r)
	}
	return b.String()
}

// Issue is one problem Validate found in one part of a template.
type Issue struct {
	// Part is "subject", "text" or "html", the JSON field of the template.
	Part string
	// Code is stable: required, invalid_utf8, line_break,
	// unknown_placeholder or placeholder_not_allowed.
	Code string
	// Detail is an English sentence for the admin.
	Detail string
}

// ValidationError lists what is wrong with a template. It unwraps to
// ErrInvalidTemplate; the admin API turns Issues into per-field errors.
type ValidationError struct {
	Name   string
	Issues []Issue
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid template %s:", e.Name)
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " %s: %s", is.Part, is.Detail)
	}
	return b.String()
}

func (e *ValidationError) Unwrap() error { return ErrInvalidTemplate }

// Validate checks a template before it is stored as an admin override (and
// every built-in one at start-up): name must be one of KnownNames; the
// subject and the text part must not be blank, and the subject must be one
// line; every part must be valid UTF-8 and use only the placeholders of
// SPEC §5.7; $PASSWORD may appear only in the text and HTML parts of
// legacy_new_password. The HTML part may be empty (the email is then sent
// as text only). Problems are reported together in a *ValidationError.
func Validate(name string, t Template) error {
	if !IsKnownName(name) {
		return fmt.Errorf("validate template %q: %w", name, ErrUnknownTemplate)
	}
	if issues := check(name, t, true); len(issues) > 0 {
		return &ValidationError{Name: name, Issues: issues}
	}
	return nil
}

// check lists the problems of t. Render calls it with strict false: only
// what would make the rendered email unsafe.
func check(name string, t Template, strict bool) []Issue {
	var issues []Issue
	add := func(part, code, format string, args ...any) {
		issues = append(issues, Issue{Part: part, Code: code, Detail: fmt.Sprintf(format, args...)})
	}
	subject := strings.TrimSpace(t.Subject)
	if strict {
		if subject == "" {
			add("subject", "required", "The subject is required.")
		}
		if strings.TrimSpace(t.Text) == "" {
			add("text", "required", "The text part is required.")
		}
	}
	if strings.ContainsFunc(subject, isBreak) {
		add("subject", "line_break", "The subject must be a single line.")
	}
	parts := []struct{ part, s string }{{"subject", subject}, {"text", t.Text}, {"html", t.HTML}}
	for _, p := range parts {
		if strict && !utf8.ValidString(p.s) {
			add(p.part, "invalid_utf8", "The %s is not valid UTF-8.", p.part)
		}
		seen := map[string]bool{}
		for tok := range tokens(p.s) {
			if seen[tok.name] {
				continue
			}
			seen[tok.name] = true
			switch {
			case tok.name == phPassword && (name != LegacyNewPassword || p.part == "subject"):
				add(p.part, "placeholder_not_allowed",
					"$PASSWORD is allowed only in the text and HTML parts of %s.", LegacyNewPassword)
			case strict && !isPlaceholder(tok.name):
				add(p.part, "unknown_placeholder", "Unknown placeholder %s; known: %s.",
					p.s[tok.start:tok.end], knownPlaceholders)
			}
		}
	}
	return issues
}

// knownPlaceholders is the list shown to an admin who mistyped one.
var knownPlaceholders = func() string {
	out := make([]string, len(placeholderNames))
	for i, p := range placeholderNames {
		out[i] = "$" + p
	}
	return strings.Join(out, ", ")
}()
