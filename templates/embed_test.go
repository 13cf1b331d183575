package templates_test

import (
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/latchkey/latchkey/templates"
)

// TestEmailFiles checks the house rules of every embedded email file that a
// parser would not: plain UTF-8 with LF line ends, and HTML parts that load
// nothing, run nothing and declare their language. The structure of the
// tree (every locale has every template) is tested in internal/mailtmpl.
func TestEmailFiles(t *testing.T) {
	t.Parallel()
	forbidden := regexp.MustCompile(`(?i)<script|<img|<link|<iframe|<object|<embed|<form|<style|@import|url\(|src=|javascript:|https?://`)
	files := 0
	err := fs.WalkDir(templates.Email, "email", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := fs.ReadFile(templates.Email, p)
		if err != nil {
			return err
		}
		s := string(b)
		if !utf8.ValidString(s) || strings.Contains(s, "\r") || strings.HasPrefix(s, "\uFEFF") {
			t.Errorf("%s: want UTF-8 without BOM and LF line ends", p)
		}
		if !strings.HasSuffix(s, "\n") {
			t.Errorf("%s: want a final newline", p)
		}
		parts := strings.Split(p, "/") // email/<name>/<locale>/<file>
		if len(parts) != 4 {
			t.Errorf("%s: want email/<name>/<locale>/<file>", p)
			return nil
		}
		locale := parts[2]
		switch path.Base(p) {
		case "subject.txt":
			if strings.Count(s, "\n") != 1 {
				t.Errorf("%s: want one line", p)
			}
		case "html.html":
			if m := forbidden.FindString(s); m != "" {
				t.Errorf("%s: %q: HTML parts use no external resources, images, scripts or style sheets", p, m)
			}
			if !strings.Contains(s, `<html lang="`+locale+`"`) {
				t.Errorf("%s: want <html lang=%q>", p, locale)
			}
			if !strings.HasPrefix(s, "<!DOCTYPE html>") || !strings.Contains(s, `<meta charset="utf-8">`) ||
				!strings.Contains(s, "<title>") {
				t.Errorf("%s: want a doctype, a UTF-8 charset and a title", p)
			}
			for _, a := range regexp.MustCompile(`<a [^>]*>`).FindAllString(s, -1) {
				if !strings.Contains(a, `href="$LINK"`) {
					t.Errorf("%s: %s: links point to $LINK only", p, a)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no embedded email templates")
	}
}
