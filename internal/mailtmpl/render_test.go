package mailtmpl

import (
	"errors"
	"strings"
	"testing"
)

var resetVars = Vars{
	FirstName:      "John",
	LastName:       "Smith",
	Username:       "johnsmith",
	Email:          "john@example.com",
	Domain:         "acme.11111.service",
	Extension:      "1001",
	Link:           "https://portal.example.com/reset?token=abc_DEF-123",
	ExpiresMinutes: 30,
}

func render(t *testing.T, c *Catalog, name, locale string, v Vars) Rendered {
	t.Helper()
	tmpl, _, err := c.Lookup(name, locale)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(name, tmpl, v)
	if err != nil {
		t.Fatalf("Render(%s, %s): %v", name, locale, err)
	}
	return out
}

func TestRenderPasswordReset(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	tests := []struct {
		locale, subject string
		text            []string
	}{
		{"en", "Username and Password change request", []string{
			"Forgot Username/Password",
			"Hi John,",
			"We have received a request for your username information or password reset.",
			"Your username: johnsmith",
			"To reset your password, simply click the link below:",
			"\n" + resetVars.Link + "\n",
			"expires in 30 minutes",
			"If you do not want to change your password, please ignore this email.",
		}},
		{"fr", "Demande de modification du nom d'utilisateur et du mot de passe", []string{
			"Bonjour John,",
			"johnsmith",
			"\n" + resetVars.Link + "\n",
			"expire dans 30 minutes",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.locale, func(t *testing.T) {
			t.Parallel()
			out := render(t, c, PasswordReset, tt.locale, resetVars)
			if out.Subject != tt.subject {
				t.Errorf("subject = %q, want %q", out.Subject, tt.subject)
			}
			for _, want := range tt.text {
				if !strings.Contains(out.Text, want) {
					t.Errorf("text part lacks %q:\n%s", want, out.Text)
				}
			}
			for _, want := range []string{
				`<html lang="` + tt.locale + `"`,
				"John", "<strong>johnsmith</strong>",
				`href="` + resetVars.Link + `"`,
				">" + resetVars.Link + "</a>", // the raw URL, for clients that block buttons
				"30 minutes",
			} {
				if !strings.Contains(out.HTML, want) {
					t.Errorf("HTML part lacks %q", want)
				}
			}
			for _, part := range []string{out.Subject, out.Text, out.HTML} {
				if strings.Contains(part, "$") {
					t.Errorf("a placeholder is left: %q", part)
				}
			}
		})
	}
}

func TestRenderPasswordChanged(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	v := resetVars
	v.Password = "s3cret-Never-Shown"
	for _, locale := range c.Locales() {
		out := render(t, c, PasswordChanged, locale, v)
		for _, part := range []string{out.Subject, out.Text, out.HTML} {
			if strings.Contains(part, v.Password) {
				t.Errorf("%s: the email shows the password", locale)
			}
		}
		if !strings.Contains(out.Text, "johnsmith") || !strings.Contains(out.HTML, "johnsmith") {
			t.Errorf("%s: the email does not name the account", locale)
		}
	}
	out := render(t, c, PasswordChanged, "en", v)
	if out.Subject != "Your password was changed" || !strings.Contains(out.Text, "administrator") {
		t.Errorf("en: subject %q, text %q", out.Subject, out.Text)
	}
}

func TestRenderEscapesHTMLOnly(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	v := resetVars
	v.FirstName = `<script>alert("x")</script> & Co`
	out := render(t, c, PasswordReset, "en", v)
	if strings.Contains(out.HTML, "<script>") {
		t.Errorf("HTML part holds an unescaped <script>")
	}
	if want := "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co"; !strings.Contains(out.HTML, want) {
		t.Errorf("HTML part lacks %q", want)
	}
	if !strings.Contains(out.Text, "Hi "+v.FirstName+",") {
		t.Errorf("text part does not hold the first name verbatim:\n%s", out.Text)
	}

	// A link cannot break out of its attribute.
	v.Link = `https://x.example/"><script>`
	out = render(t, c, PasswordReset, "en", v)
	if strings.Contains(out.HTML, `"><script>`) {
		t.Errorf("the link broke out of href")
	}
}

func TestRenderPlaceholderForms(t *testing.T) {
	t.Parallel()
	v := Vars{FirstName: "Ann", LastName: "Lee", Username: "ann@acme", Email: "ann@example.com",
		Domain: "acme.11111.service", Extension: "1001", Link: "https://l.example/r?t=1", ExpiresMinutes: 45}
	tests := []struct{ in, want string }{
		{"$LINK", v.Link},
		{"$Url$", v.Link},
		{"$url", v.Link},
		{"$URL$", v.Link},
		{"$link$.", v.Link + "."},
		{"<$Link>", "<" + v.Link + ">"},
		{"$FirstName $LASTNAME", "Ann Lee"},
		{"$FIRSTNAME$ $LASTNAME$", "Ann Lee"},
		{"$FIRSTNAME$LASTNAME", "AnnLee"},
		{"$FIRSTNAME$$LASTNAME$", "AnnLee"},
		{"$USERNAME $EMAIL $DOMAIN $EXTENSION", "ann@acme ann@example.com acme.11111.service 1001"},
		{"$EXPIRES_MINUTES minutes", "45 minutes"},
		{"Hi $FIRSTNAME, bye", "Hi Ann, bye"},
		// Not placeholders, or unknown ones: left as written.
		{"costs $5 or US$ 6, $", "costs $5 or US$ 6, $"},
		{"$USD $FOO$ ${LINK}", "$USD $FOO$ ${LINK}"},
		{"$FIRSTNAMES", "$FIRSTNAMES"},
		{"$FIRST_NAME", "$FIRST_NAME"},
		{"", ""},
	}
	for _, tt := range tests {
		out, err := Render(PasswordReset, Template{Subject: "s", Text: tt.in, HTML: tt.in}, v)
		if err != nil {
			t.Fatalf("Render(%q): %v", tt.in, err)
		}
		if out.Text != tt.want {
			t.Errorf("text %q → %q, want %q", tt.in, out.Text, tt.want)
		}
		if !strings.Contains(tt.in, "<") && out.HTML != tt.want {
			t.Errorf("html %q → %q, want %q", tt.in, out.HTML, tt.want)
		}
	}
}

func TestRenderSinglePass(t *testing.T) {
	t.Parallel()
	v := Vars{FirstName: "$LINK", LastName: "$Url$", Username: "$FIRSTNAME", Link: "https://x.example/?a=$USERNAME"}
	tmpl := Template{Subject: "$FIRSTNAME", Text: "$FIRSTNAME|$LASTNAME|$USERNAME|$LINK", HTML: "$FIRSTNAME|$LINK"}
	out, err := Render(PasswordReset, tmpl, v)
	if err != nil {
		t.Fatal(err)
	}
	want := Rendered{Subject: "$LINK", Text: "$LINK|$Url$|$FIRSTNAME|https://x.example/?a=$USERNAME",
		HTML: "$LINK|https://x.example/?a=$USERNAME"}
	if out != want {
		t.Errorf("Render = %+v, want %+v", out, want)
	}
}

func TestRenderSubjectStaysOneLine(t *testing.T) {
	t.Parallel()
	v := Vars{FirstName: "Eve\r\nBcc: victim@example.com", LastName: "a\u2028b\u0085c\td\x00e\n"}
	out, err := Render(PasswordReset, Template{Subject: "Hi $FIRSTNAME $LASTNAME\n", Text: "$FIRSTNAME"}, v)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Hi Eve Bcc: victim@example.com a b c d e"; out.Subject != want {
		t.Errorf("subject = %q, want %q", out.Subject, want)
	}
	if out.Text != v.FirstName {
		t.Errorf("text = %q, want the value verbatim", out.Text)
	}

	_, err = Render(PasswordReset, Template{Subject: "one\r\nBcc: x@example.com", Text: "t"}, v)
	if !errors.Is(err, ErrInvalidTemplate) {
		t.Errorf("a two-line subject template: error = %v, want ErrInvalidTemplate", err)
	}
}

func TestRenderPassword(t *testing.T) {
	t.Parallel()
	v := Vars{Username: "bob", Password: "Zq8-new-pass"}
	tmpl := Template{Subject: "Your new password", Text: "New password: $PASSWORD", HTML: "<p>New password: $Password$</p>"}
	out, err := Render(LegacyNewPassword, tmpl, v)
	if err != nil {
		t.Fatal(err)
	}
	if out.Text != "New password: Zq8-new-pass" || out.HTML != "<p>New password: Zq8-new-pass</p>" {
		t.Errorf("Render = %+v", out)
	}

	for _, name := range []string{PasswordReset, PasswordChanged, Welcome, LegacyResetRequest} {
		_, err := Render(name, tmpl, v)
		var verr *ValidationError
		if !errors.As(err, &verr) || !errors.Is(err, ErrInvalidTemplate) {
			t.Errorf("Render(%s) with $PASSWORD: error = %v, want a ValidationError", name, err)
		}
	}
	_, err = Render(LegacyNewPassword, Template{Subject: "Password $PASSWORD", Text: "t"}, v)
	if !errors.Is(err, ErrInvalidTemplate) {
		t.Errorf("$PASSWORD in the subject: error = %v, want ErrInvalidTemplate", err)
	}
}

func TestRenderUnknownName(t *testing.T) {
	t.Parallel()
	if _, err := Render("nope", Template{Subject: "s", Text: "t"}, Vars{}); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("error = %v, want ErrUnknownTemplate", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Template{Subject: "Reset for $USERNAME", Text: "Hi $FirstName$, $Url$ ($EXPIRES_MINUTES min)", HTML: "<a href=\"$LINK\">$link</a>"}
	tests := []struct {
		name      string
		tmplName  string
		tmpl      Template
		wantCodes []string // "part:code"; nil means valid
	}{
		{"valid", PasswordReset, ok, nil},
		{"no HTML part", PasswordReset, Template{Subject: "s", Text: "t"}, nil},
		{"password in legacy", LegacyNewPassword, Template{Subject: "s", Text: "New password: $PASSWORD", HTML: "$password$"}, nil},
		{"a price is no placeholder", PasswordReset, Template{Subject: "s", Text: "costs $5, US$ 6"}, nil},
		{"blank subject and text", PasswordReset, Template{Subject: " \n", Text: "\n"}, []string{"subject:required", "text:required"}},
		{"password outside legacy", PasswordReset, Template{Subject: "s", Text: "$PASSWORD", HTML: "$Password$ $PASSWORD"},
			[]string{"text:placeholder_not_allowed", "html:placeholder_not_allowed"}},
		{"password in the legacy subject", LegacyNewPassword, Template{Subject: "$PASSWORD", Text: "t"},
			[]string{"subject:placeholder_not_allowed"}},
		{"unknown placeholders", Welcome, Template{Subject: "$SENDER_NAME", Text: "$FRISTNAME $FRISTNAME $USD", HTML: "$Token$"},
			[]string{"subject:unknown_placeholder", "text:unknown_placeholder", "text:unknown_placeholder", "html:unknown_placeholder"}},
		{"two-line subject", PasswordReset, Template{Subject: "a\nb", Text: "t"}, []string{"subject:line_break"}},
		{"invalid UTF-8", PasswordReset, Template{Subject: "s", Text: "caf\xe9"}, []string{"text:invalid_utf8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Validate(tt.tmplName, tt.tmpl)
			if tt.wantCodes == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || !errors.Is(err, ErrInvalidTemplate) {
				t.Fatalf("Validate error = %v, want a ValidationError", err)
			}
			var got []string
			for _, is := range verr.Issues {
				got = append(got, is.Part+":"+is.Code)
				if is.Detail == "" {
					t.Errorf("issue %+v has no detail", is)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.wantCodes, " ") {
				t.Errorf("issues = %v, want %v (%v)", got, tt.wantCodes, err)
			}
		})
	}

	if err := Validate("nope", ok); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Validate(nope) = %v, want ErrUnknownTemplate", err)
	}
	err := Validate(Welcome, Template{Subject: "s", Text: "Hi $FRISTNAME"})
	if err == nil || !strings.Contains(err.Error(), "$FRISTNAME") || !strings.Contains(err.Error(), "$FIRSTNAME") {
		t.Errorf("the message should name the mistyped and the known placeholders: %v", err)
	}
}

func TestKnownNames(t *testing.T) {
	t.Parallel()
	want := "legacy_new_password legacy_reset_request login_name password_changed password_reset rollout_reminder welcome"
	if got := strings.Join(KnownNames(), " "); got != want {
		t.Errorf("KnownNames() = %s", got)
	}
	if IsKnownName("Password_Reset") {
		t.Errorf("names are case-sensitive")
	}
}
