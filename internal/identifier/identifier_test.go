package identifier

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

func TestLoginName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		raw, want string
		ok        bool
	}{
		{"1001@acme.11111.service", "1001@acme.11111.service", true},
		{"  jdoe  ", "jdoe", true},
		{"Zoe\u0301", "Zoé", true}, // NFD becomes NFC
		{"o'brien+x@acme", "o'brien+x@acme", true},
		{strings.Repeat("a", 254), strings.Repeat("a", 254), true},
		{strings.Repeat("é", 127), strings.Repeat("é", 127), true},
		{strings.Repeat("a", 255), "", false},
		{strings.Repeat("é", 128), "", false}, // 256 bytes
		{"", "", false},
		{"   ", "", false},
		{"jo<3>ann", "", false},
		{"a,b", "", false},
		{"a;b", "", false},
		{`a"b`, "", false},
		{`a\b`, "", false},
		{"a b", "", false},
		{"a\u00a0b", "", false}, // no-break space
		{"a\u200bb", "", false}, // zero-width space
		{"a\u202eb", "", false}, // right-to-left override
		{"a\x00b", "", false},
		{"a\r\nBcc: x", "", false},
		{"a\ufffdb", "", false},
	} {
		got, ok := LoginName(c.raw)
		if got != c.want || ok != c.ok {
			t.Errorf("LoginName(%q) = %q, %v; want %q, %v", c.raw, got, ok, c.want, c.ok)
		}
	}
}

func TestEmail(t *testing.T) {
	t.Parallel()
	for raw, ok := range map[string]bool{
		"jason@example.com":                       true,
		" jason@example.com ":                     true,
		"first.last+tag@sub.example.com":          true,
		"Jason <jason@example.com>":               false,
		"jason@example.com, b@x.com":              false,
		"jason":                                   false,
		"jason@example.com\r\nBcc: x@y":           false,
		strings.Repeat("a", 243) + "@example.com": false, // 255 bytes
		"anna@bücher.example":                     true,
		"anna@Bücher.example":                     true,
		"用户@例子.广告":                                true, // deliverable through SMTPUTF8 only
		"anna@xn--bcher-kva.example":              true,
		"anna@-bücher.example":                    false, // no A-label: a label starts with a hyphen
		"anna@bücher-.example":                    false,
		// ü.de is xn--tda.de: 5 bytes more. Fits as typed, not as sent.
		strings.Repeat("a", 244) + "@ü.de": false,
		strings.Repeat("a", 243) + "@ü.de": true,
	} {
		if _, got := Email(raw); got != ok {
			t.Errorf("Email(%q) = %v, want %v", raw, got, ok)
		}
	}
}

// FuzzLoginNameIsOneRule: whatever LoginName accepts is canonical (accepted
// again unchanged), fits the byte limit, and is accepted by Recovery, the
// rule of "forgot password": a name that can be created can be typed back.
func FuzzLoginNameIsOneRule(f *testing.F) {
	for _, seed := range []string{"1001@acme", "Zoe\u0301", " x ", "jo<3>ann", strings.Repeat("é", 127), "a\u200bb"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, ok := LoginName(raw)
		if !ok {
			return
		}
		if !utf8.ValidString(name) || len(name) == 0 || len(name) > MaxLoginNameBytes {
			t.Fatalf("accepted %q (%d bytes)", name, len(name))
		}
		if again, ok := LoginName(name); !ok || again != name {
			t.Fatalf("not canonical: %q → %q, %v", name, again, ok)
		}
		if rec, ok := Recovery(raw); !ok || rec != name {
			t.Fatalf("Recovery(%q) = %q, %v; LoginName gave %q", raw, rec, ok, name)
		}
		if strings.ContainsAny(name, forbiddenInName+"\r\n\t ") {
			t.Fatalf("accepted a forbidden character: %q", name)
		}
	})
}

// FuzzEmailIsRecoverable: every email address accepted at creation can be
// typed into "forgot password".
func FuzzEmailIsRecoverable(f *testing.F) {
	for _, seed := range []string{"a@b.c", "first.last@example.com", `"a b"@x.y`, "a@[127.0.0.1]"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		email, ok := Email(raw)
		if !ok {
			return
		}
		if again, ok := Email(email); !ok || again != email {
			t.Fatalf("not canonical: %q → %q, %v", email, again, ok)
		}
		if _, ok := Recovery(email); !ok {
			t.Fatalf("Email accepts %q but Recovery refuses it", email)
		}
	})
}

// FuzzEmailHasAnASCIIDomain: every email address accepted at creation has a
// domain a mail server without SMTPUTF8 can be given (its A-label), and the
// address still fits RFC 5321's path with it.
func FuzzEmailHasAnASCIIDomain(f *testing.F) {
	for _, seed := range []string{"anna@bücher.example", "用户@例子.广告", "a@b.c", "anna@-bücher.example", "a@[127.0.0.1]", "x@ß.de"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		email, ok := Email(raw)
		if !ok {
			return
		}
		at := strings.LastIndexByte(email, '@')
		ascii, err := idna.Lookup.ToASCII(email[at+1:])
		if !isASCII(email[at+1:]) {
			if err != nil {
				t.Fatalf("Email accepts %q, whose domain has no A-label: %v", email, err)
			}
			if at+1+len(ascii) > MaxEmailBytes {
				t.Fatalf("Email accepts %q, %d bytes with its A-label", email, at+1+len(ascii))
			}
		}
	})
}

func TestDomainOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"1001@ACME.x": "acme.x", "jdoe": "", "a@b@c.d": "c.d"} {
		if got := DomainOf(in); got != want {
			t.Errorf("DomainOf(%q) = %q, want %q", in, got, want)
		}
	}
}
