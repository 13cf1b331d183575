package mailtmpl

import (
	"errors"
	"html"
	"strings"
	"testing"
)

// FuzzRender checks what must hold whatever the template and the values:
// no panic; no '<', '>' or '"' from a value reaches the HTML part (the part
// has exactly as many as the template); the subject has no line break; and
// substitution is a single pass (a template that is one placeholder renders
// to the value itself).
func FuzzRender(f *testing.F) {
	f.Add("Hi $FIRSTNAME", "<p>Hi $FIRSTNAME, <a href=\"$LINK\">$Url$</a></p>", "Hi $Firstname$", "John", "https://x/?t=1")
	f.Add("$LINK$", "$link$LINK$$", "$$$", "$LINK", "$FIRSTNAME")
	f.Add("$EXPIRES_MINUTES", "<b>$LASTNAME</b>", "x", "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>")
	f.Add("$PASSWORD", "$5 $USD", "a\r\nb", "a\r\nBcc: x@example.com", "\u2028")
	f.Add("", "", "", "", "")
	f.Fuzz(func(t *testing.T, text, htmlTmpl, subject, first, link string) {
		v := Vars{FirstName: first, LastName: link + first, Username: first, Email: link,
			Domain: first, Extension: link, Link: link, ExpiresMinutes: len(first), Password: first}
		tmpl := Template{Subject: subject, Text: text, HTML: htmlTmpl}
		for _, name := range []string{PasswordReset, LegacyNewPassword} {
			out, err := Render(name, tmpl, v)
			if err != nil {
				if !errors.Is(err, ErrInvalidTemplate) {
					t.Fatalf("Render(%s): unexpected error %v", name, err)
				}
				continue
			}
			for _, c := range []string{"<", ">", `"`} {
				if got, want := strings.Count(out.HTML, c), strings.Count(htmlTmpl, c); got != want {
					t.Fatalf("HTML part has %d %q, the template %d: a value was not escaped\n%q", got, c, want, out.HTML)
				}
			}
			if strings.ContainsAny(out.Subject, "\r\n") {
				t.Fatalf("subject has a line break: %q", out.Subject)
			}
		}

		out, err := Render(PasswordReset, Template{Subject: "$FIRSTNAME", Text: "$FIRSTNAME", HTML: "$Url$"}, v)
		if err != nil {
			t.Fatal(err)
		}
		if out.Text != first || out.HTML != html.EscapeString(link) {
			t.Fatalf("not a single verbatim pass: %+v", out)
		}
		if strings.ContainsAny(out.Subject, "\r\n") || out.Subject != strings.TrimSpace(out.Subject) {
			t.Fatalf("subject %q is not one trimmed line", out.Subject)
		}

		_ = Validate(PasswordReset, tmpl) // must not panic
	})
}
