package credential

import (
	"bytes"
	"errors"
	"testing"
)

func TestPHCRoundTrip(t *testing.T) {
	t.Parallel()
	h := phcHash{
		memory:  19456,
		time:    2,
		threads: 1,
		salt:    []byte("0123456789abcdef"),
		key:     bytes.Repeat([]byte{0xfb}, 32),
	}
	s := h.String()
	const want = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" +
		"+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s"
	if s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	got, err := parsePHC(s)
	if err != nil {
		t.Fatalf("parsePHC: %v", err)
	}
	if got.memory != h.memory || got.time != h.time || got.threads != h.threads ||
		!bytes.Equal(got.salt, h.salt) || !bytes.Equal(got.key, h.key) {
		t.Errorf("parsePHC(%q) = %+v, want %+v", s, got, h)
	}
}

// FuzzParsePHC: the parser never panics, reports every failure as
// ErrMalformedHash, and accepts only strings it would write itself.
func FuzzParsePHC(f *testing.F) {
	for _, s := range []string{
		"$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$ajM24oReWBgQDfsMK0Dsb7YAltWVPPalwcYJN+rjymU",
		"$argon2id$v=19$m=64,t=3,p=2$c2FsdHNhbHRzYWx0$AVGFVCjFW1eSXIsDCqOyaw",
		"$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHQxMjM0NTY3OA$4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7NjbzhE",
		"$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
		"$argon2id$v=19$m=,t=,p=$$",
		"$argon2id$v=19$m=4294967295,t=4294967295,p=255$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"",
		"$",
		"$$$$$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("parsePHC(%q) error %v does not wrap ErrMalformedHash", s, err)
			}
			return
		}
		if got := h.String(); got != s {
			t.Fatalf("parsePHC(%q) accepted a non-canonical form; canonical is %q", s, got)
		}
		if h.memory > maxMemoryKiB || h.time > maxTime || len(h.key) > maxKeyLen || len(h.salt) > maxSaltLen {
			t.Fatalf("parsePHC(%q) = %+v exceeds the bounds", s, h)
		}
	})
}
