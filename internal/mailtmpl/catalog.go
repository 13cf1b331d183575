package mailtmpl

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/language"

	"github.com/latchkey/latchkey/templates"
)

// DefaultLocale is the last fallback of every lookup; a catalog must have
// it.
const DefaultLocale = "en"

// The three files of a template directory.
const (
	fileSubject = "subject.txt"
	fileText    = "text.txt"
	fileHTML    = "html.html"
)

// maxLocaleLen bounds the tag handed to the BCP 47 parser; real tags are far
// shorter.
const maxLocaleLen = 64

// Catalog holds the built-in templates, parsed and checked once. It is
// immutable and safe for concurrent use.
type Catalog struct {
	byName  map[string]map[string]Template // name → locale → template
	names   []string                       // sorted
	locales []string                       // sorted
	// matchLocales[i] is the locale of the matcher's i-th tag;
	// DefaultLocale comes first, so it is the matcher's default.
	matchLocales []string
	matcher      language.Matcher
}

// Builtin parses the templates embedded in the binary (templates.Email).
func Builtin() (*Catalog, error) {
	sub, err := fs.Sub(templates.Email, "email")
	if err != nil {
		return nil, fmt.Errorf("mailtmpl: open built-in templates: %w", err)
	}
	return NewCatalog(sub)
}

// NewCatalog parses a tree <name>/<locale>/{subject.txt,text.txt,html.html}
// (for the built-ins, the "email" directory of templates.Email; see
// Builtin). It refuses a malformed tree rather than sending a wrong email
// later: a name outside KnownNames, a locale that is not a canonical BCP 47
// tag, a missing, blank, non-UTF-8 or unexpected file, a template that fails
// Validate, a locale that lacks a template another locale has, or no
// DefaultLocale.
func NewCatalog(fsys fs.FS) (*Catalog, error) {
	c, err := load(fsys)
	if err != nil {
		return nil, fmt.Errorf("mailtmpl: load email templates: %w", err)
	}
	return c, nil
}

func load(fsys fs.FS) (*Catalog, error) {
	nameDirs, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	c := &Catalog{byName: map[string]map[string]Template{}}
	allLocales := map[string]bool{}
	for _, nd := range nameDirs {
		name := nd.Name()
		if !nd.IsDir() {
			return nil, fmt.Errorf("%s: want a directory named after a template", name)
		}
		if !IsKnownName(name) {
			return nil, fmt.Errorf("%s: unknown template name (known: %s)", name, strings.Join(KnownNames(), ", "))
		}
		localeDirs, err := fs.ReadDir(fsys, name)
		if err != nil {
			return nil, err
		}
		if len(localeDirs) == 0 {
			return nil, fmt.Errorf("%s: no locales", name)
		}
		byLocale := map[string]Template{}
		for _, ld := range localeDirs {
			locale := ld.Name()
			dir := path.Join(name, locale)
			if !ld.IsDir() {
				return nil, fmt.Errorf("%s: want a directory named after a locale", dir)
			}
			tag, err := language.Parse(locale)
			if err != nil {
				return nil, fmt.Errorf("%s: locale is not a BCP 47 tag: %w", dir, err)
			}
			if tag.String() != locale {
				return nil, fmt.Errorf("%s: locale is not canonical: name the directory %q", dir, tag.String())
			}
			t, err := loadTemplate(fsys, dir)
			if err != nil {
				return nil, err
			}
			if err := Validate(name, t); err != nil {
				return nil, fmt.Errorf("%s: %w", dir, err)
			}
			byLocale[locale] = t
			allLocales[locale] = true
		}
		c.byName[name] = byLocale
	}
	if len(c.byName) == 0 {
		return nil, errors.New("no templates")
	}
	c.names = slices.Sorted(maps.Keys(c.byName))
	c.locales = slices.Sorted(maps.Keys(allLocales))
	if !allLocales[DefaultLocale] {
		return nil, fmt.Errorf("the fallback locale %s is missing", DefaultLocale)
	}

	// Every locale has every template, so a lookup never falls back to
	// another language for one email only.
	var missing []string
	for _, name := range c.names {
		for _, locale := range c.locales {
			if _, ok := c.byName[name][locale]; !ok {
				missing = append(missing, path.Join(name, locale))
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("every locale needs every template; missing: %s", strings.Join(missing, ", "))
	}

	c.matchLocales = append([]string{DefaultLocale}, slices.DeleteFunc(slices.Clone(c.locales),
		func(l string) bool { return l == DefaultLocale })...)
	tags := make([]language.Tag, len(c.matchLocales))
	for i, l := range c.matchLocales {
		tags[i] = language.MustParse(l) // parsed above
	}
	c.matcher = language.NewMatcher(tags)
	return c, nil
}

// loadTemplate reads the three files of dir, which holds nothing else.
func loadTemplate(fsys fs.FS, dir string) (Template, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return Template{}, err
	}
	for _, e := range entries {
		switch e.Name() {
		case fileSubject, fileText, fileHTML:
			if !e.Type().IsRegular() {
				return Template{}, fmt.Errorf("%s: not a regular file", path.Join(dir, e.Name()))
			}
		default:
			return Template{}, fmt.Errorf("%s: unexpected file (want only %s, %s and %s)",
				path.Join(dir, e.Name()), fileSubject, fileText, fileHTML)
		}
	}
	var parts [3]string
	for i, file := range []string{fileSubject, fileText, fileHTML} {
		p := path.Join(dir, file)
		b, err := fs.ReadFile(fsys, p)
		if errors.Is(err, fs.ErrNotExist) {
			return Template{}, fmt.Errorf("%s: missing", p)
		}
		if err != nil {
			return Template{}, err
		}
		if !utf8.Valid(b) {
			return Template{}, fmt.Errorf("%s: not valid UTF-8", p)
		}
		if strings.TrimSpace(string(b)) == "" {
			return Template{}, fmt.Errorf("%s: empty", p)
		}
		parts[i] = string(b)
	}
	return Template{Subject: strings.TrimSpace(parts[0]), Text: parts[1], HTML: parts[2]}, nil
}

// Names returns the names of the built-in templates, sorted.
func (c *Catalog) Names() []string { return slices.Clone(c.names) }

// Locales returns the built-in locales, sorted. Every one has every
// template.
func (c *Catalog) Locales() []string { return slices.Clone(c.locales) }

// MatchLocale returns the built-in locale that best serves a user whose
// locale is the BCP 47 tag locale: fr-CA gets fr when there is no fr-CA, a
// language without templates gets DefaultLocale, and so do an empty or
// malformed tag.
func (c *Catalog) MatchLocale(locale string) string {
	locale = strings.TrimSpace(locale)
	if locale == "" || len(locale) > maxLocaleLen {
		return DefaultLocale
	}
	tag, err := language.Parse(locale)
	if err != nil {
		return DefaultLocale
	}
	_, i, conf := c.matcher.Match(tag)
	if conf == language.No {
		return DefaultLocale
	}
	return c.matchLocales[i]
}

// Lookup returns the built-in template name in the locale that best matches
// locale (see MatchLocale), and that locale. A name without a built-in
// template gives ErrUnknownTemplate.
func (c *Catalog) Lookup(name, locale string) (Template, string, error) {
	byLocale, ok := c.byName[name]
	if !ok {
		return Template{}, "", fmt.Errorf("look up template %q: %w", name, ErrUnknownTemplate)
	}
	matched := c.MatchLocale(locale)
	return byLocale[matched], matched, nil
}
