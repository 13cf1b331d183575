package mailtmpl

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/latchkey/latchkey/templates"
)

func builtin(t *testing.T) *Catalog {
	t.Helper()
	c, err := Builtin()
	if err != nil {
		t.Fatalf("Builtin: %v", err)
	}
	return c
}

// TestBuiltinEveryLocaleHasEveryTemplate reads the embedded tree itself, not
// through the catalog, so adding a locale directory to one template without
// translating every other template fails here with the missing paths.
func TestBuiltinEveryLocaleHasEveryTemplate(t *testing.T) {
	t.Parallel()
	root, err := fs.Sub(templates.Email, "email")
	if err != nil {
		t.Fatal(err)
	}
	nameDirs, err := fs.ReadDir(root, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	locales := map[string]bool{}
	for _, nd := range nameDirs {
		names = append(names, nd.Name())
		localeDirs, err := fs.ReadDir(root, nd.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, ld := range localeDirs {
			locales[ld.Name()] = true
		}
	}
	for _, want := range []string{PasswordReset, PasswordChanged} {
		if !slices.Contains(names, want) {
			t.Errorf("built-in template %s is missing", want)
		}
	}
	for _, want := range []string{"en", "fr"} {
		if !locales[want] {
			t.Errorf("built-in locale %s is missing", want)
		}
	}
	for _, name := range names {
		if !IsKnownName(name) {
			t.Errorf("templates/email/%s: not a template name of SPEC §5.7", name)
		}
		for locale := range locales {
			for _, file := range []string{fileSubject, fileText, fileHTML} {
				p := path.Join(name, locale, file)
				b, err := fs.ReadFile(root, p)
				if err != nil {
					t.Errorf("templates/email/%s: %v", p, err)
					continue
				}
				if strings.TrimSpace(string(b)) == "" {
					t.Errorf("templates/email/%s is empty", p)
				}
			}
		}
	}

	// The catalog agrees, and hands out every part non-empty.
	c := builtin(t)
	if got := c.Names(); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
		t.Errorf("Names() = %v, want %v", got, names)
	}
	if got, want := len(c.Locales()), len(locales); got != want {
		t.Errorf("Locales() = %v, want %d locales", c.Locales(), want)
	}
	for _, name := range c.Names() {
		for _, locale := range c.Locales() {
			tmpl, got, err := c.Lookup(name, locale)
			if err != nil || got != locale {
				t.Errorf("Lookup(%s, %s) = locale %q, %v", name, locale, got, err)
				continue
			}
			if tmpl.Subject == "" || strings.TrimSpace(tmpl.Text) == "" || strings.TrimSpace(tmpl.HTML) == "" {
				t.Errorf("%s/%s has an empty part: %+v", name, locale, tmpl)
			}
			if err := Validate(name, tmpl); err != nil {
				t.Errorf("%s/%s: %v", name, locale, err)
			}
		}
	}
}

// TestBuiltinTranslated catches a locale directory that was copied from
// English but not translated.
func TestBuiltinTranslated(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	for _, name := range c.Names() {
		en, _, err := c.Lookup(name, DefaultLocale)
		if err != nil {
			t.Fatal(err)
		}
		for _, locale := range c.Locales() {
			if locale == DefaultLocale {
				continue
			}
			tmpl, _, err := c.Lookup(name, locale)
			if err != nil {
				t.Fatal(err)
			}
			if tmpl.Subject == en.Subject || tmpl.Text == en.Text {
				t.Errorf("%s/%s is the English text", name, locale)
			}
		}
	}
}

func TestMatchLocale(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	tests := []struct{ in, want string }{
		{"fr-CA", "fr"},
		{"fr", "fr"},
		{"fr-FR", "fr"},
		{"FR-ca", "fr"},
		{" fr ", "fr"},
		{"fr_CA", "fr"},
		{"en", "en"},
		{"en-GB", "en"},
		{"en-US", "en"},
		{"de", "en"}, // no German templates yet
		{"de-CH", "en"},
		{"vi", "en"},
		{"", "en"},
		{"und", "en"},
		{"xx-invalid!!", "en"},
		{"fr-CA-x-" + strings.Repeat("a", 100), "en"}, // absurdly long
		{"\x00\xff", "en"},
	}
	for _, tt := range tests {
		got := c.MatchLocale(tt.in)
		if got != tt.want {
			t.Errorf("MatchLocale(%q) = %q, want %q", tt.in, got, tt.want)
		}
		_, loc, err := c.Lookup(PasswordReset, tt.in)
		if err != nil || loc != tt.want {
			t.Errorf("Lookup(%s, %q) = %q, %v; want %q", PasswordReset, tt.in, loc, err, tt.want)
		}
	}
}

func TestMatchLocaleRegional(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{}
	for _, loc := range []string{"en", "fr", "fr-CA", "pt-BR"} {
		addTemplate(fsys, PasswordChanged, loc, Template{Subject: "s " + loc, Text: "t", HTML: "h"})
	}
	c, err := NewCatalog(fsys)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{"fr-CA", "fr-CA"},
		{"fr-BE", "fr"},
		{"fr", "fr"},
		{"pt-BR", "pt-BR"},
		{"pt", "pt-BR"},
		{"es", "en"},
	}
	for _, tt := range tests {
		if got := c.MatchLocale(tt.in); got != tt.want {
			t.Errorf("MatchLocale(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	tmpl, loc, err := c.Lookup(PasswordChanged, "fr-CA")
	if err != nil || loc != "fr-CA" || tmpl.Subject != "s fr-CA" {
		t.Errorf("Lookup(fr-CA) = %+v, %q, %v", tmpl, loc, err)
	}
}

func TestLookupUnknown(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	for _, name := range []string{"nope", "", "PASSWORD_RESET"} {
		if _, _, err := c.Lookup(name, "en"); !errors.Is(err, ErrUnknownTemplate) {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknownTemplate", name, err)
		}
	}
}

func TestCatalogConcurrentUse(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for _, loc := range []string{"fr-CA", "en", "de", ""} {
				tmpl, _, err := c.Lookup(PasswordReset, loc)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := Render(PasswordReset, tmpl, Vars{FirstName: string(rune('a' + i))}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func addTemplate(fsys fstest.MapFS, name, locale string, tmpl Template) {
	dir := name + "/" + locale + "/"
	fsys[dir+fileSubject] = &fstest.MapFile{Data: []byte(tmpl.Subject + "\n")}
	fsys[dir+fileText] = &fstest.MapFile{Data: []byte(tmpl.Text)}
	fsys[dir+fileHTML] = &fstest.MapFile{Data: []byte(tmpl.HTML)}
}

func validTree() fstest.MapFS {
	fsys := fstest.MapFS{}
	for _, name := range []string{PasswordReset, PasswordChanged} {
		for _, loc := range []string{"en", "fr"} {
			addTemplate(fsys, name, loc, Template{Subject: "Subject", Text: "Hi $FIRSTNAME", HTML: "<p>Hi $FIRSTNAME</p>"})
		}
	}
	return fsys
}

func TestNewCatalogRejectsMalformedTree(t *testing.T) {
	t.Parallel()
	if _, err := NewCatalog(validTree()); err != nil {
		t.Fatalf("the valid tree is refused: %v", err)
	}
	tests := []struct {
		name    string
		change  func(fstest.MapFS)
		wantErr string
	}{
		{"empty", func(f fstest.MapFS) { clear(f) }, "no templates"},
		{"missing part", func(f fstest.MapFS) { delete(f, "password_reset/fr/html.html") }, "password_reset/fr/html.html: missing"},
		{"empty part", func(f fstest.MapFS) { f["password_reset/fr/text.txt"].Data = []byte(" \n") }, "password_reset/fr/text.txt: empty"},
		{"invalid UTF-8", func(f fstest.MapFS) { f["password_reset/fr/text.txt"].Data = []byte("caf\xe9") }, "not valid UTF-8"},
		{"extra file", func(f fstest.MapFS) { f["password_reset/fr/html.htm"] = &fstest.MapFile{Data: []byte("x")} }, "unexpected file"},
		{"file at the root", func(f fstest.MapFS) { f["README.md"] = &fstest.MapFile{Data: []byte("x")} }, "want a directory"},
		{"unknown name", func(f fstest.MapFS) { addTemplate(f, "pasword_reset", "en", Template{"s", "t", "h"}) }, "unknown template name"},
		{"non-canonical locale", func(f fstest.MapFS) {
			for _, n := range []string{PasswordReset, PasswordChanged} {
				addTemplate(f, n, "fr_CA", Template{"s", "t", "h"})
			}
		}, `name the directory "fr-CA"`},
		{"garbage locale", func(f fstest.MapFS) { addTemplate(f, PasswordReset, "xx-invalid!!", Template{"s", "t", "h"}) }, "not a BCP 47 tag"},
		{"locale lacks a template", func(f fstest.MapFS) { addTemplate(f, PasswordReset, "de", Template{"s", "t", "h"}) }, "missing: password_changed/de"},
		{"no English", func(f fstest.MapFS) {
			for p := range f {
				if strings.Contains(p, "/en/") {
					delete(f, p)
				}
			}
		}, "fallback locale en is missing"},
		{"unknown placeholder", func(f fstest.MapFS) { f["password_changed/en/text.txt"].Data = []byte("Hi $FRISTNAME") }, "Unknown placeholder $FRISTNAME"},
		{"password placeholder", func(f fstest.MapFS) { f["password_changed/en/html.html"].Data = []byte("$PASSWORD") }, "$PASSWORD is allowed only"},
		{"two-line subject", func(f fstest.MapFS) { f["password_changed/en/subject.txt"].Data = []byte("one\ntwo\n") }, "single line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys := validTree()
			tt.change(fsys)
			c, err := NewCatalog(fsys)
			if err == nil {
				t.Fatalf("NewCatalog accepted the tree: names %v, locales %v", c.Names(), c.Locales())
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
