package smtptest_test

import (
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/smtptest"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		raw         string
		subject     string
		text        string
		html        string
		parts       int
		attachments []string
	}{
		{
			name:    "single part without Content-Type",
			raw:     "Subject: plain\n\nJust text.\nSecond line.\n",
			subject: "plain",
			text:    "Just text.\nSecond line.\n",
			parts:   1,
		},
		{
			name: "Q-encoded subject, quoted-printable text",
			raw: "Subject: =?UTF-8?q?Schl=C3=BCssel_l=C3=A4uft_ab?=\n" +
				"Content-Type: text/plain; charset=UTF-8\n" +
				"Content-Transfer-Encoding: quoted-printable\n\n" +
				"Gr=C3=BC=C3=9Fe, a long line that is soft-wrapped by the encoder so th=\nat it fits.\n",
			subject: "Schlüssel läuft ab",
			text:    "Grüße, a long line that is soft-wrapped by the encoder so that it fits.\n",
			parts:   1,
		},
		{
			name: "B-encoded subject, base64 HTML only",
			raw: "Subject: =?utf-8?b?5pel5pys6Kqe44Gu5Lu25ZCN?=\n" +
				"Content-Type: text/html; charset=utf-8\n" +
				"Content-Transfer-Encoding: base64\n\n" +
				"PHA+SGVsbG8g8J+RizwvcD4=\n",
			subject: "日本語の件名",
			html:    "<p>Hello 👋</p>",
			parts:   1,
		},
		{
			name: "mixed containing alternative and an attachment",
			raw: "Subject: nested\n" +
				"MIME-Version: 1.0\n" +
				"Content-Type: multipart/mixed; boundary=outer\n\n" +
				"preamble\n" +
				"--outer\n" +
				"Content-Type: multipart/alternative; boundary=inner\n\n" +
				"--inner\n" +
				"Content-Type: text/plain; charset=iso-8859-1\n" +
				"Content-Transfer-Encoding: quoted-printable\n\n" +
				"Caf=E9\n" +
				"--inner\n" +
				"Content-Type: text/html; charset=utf-8\n" +
				"Content-Transfer-Encoding: base64\n\n" +
				"PHA+Q2Fmw6k8L3A+\n" +
				"--inner--\n" +
				"--outer\n" +
				"Content-Type: text/plain; name=\"notes.txt\"\n" +
				"Content-Disposition: attachment; filename=\"notes.txt\"\n" +
				"Content-Transfer-Encoding: base64\n\n" +
				"bm90IHRoZSBib2R5\n" +
				"--outer--\n",
			subject:     "nested",
			text:        "Café",
			html:        "<p>Café</p>",
			parts:       3,
			attachments: []string{"notes.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := smtptest.Message{Data: crlf(tt.raw)}.Parse()
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p.Subject != tt.subject {
				t.Errorf("Subject = %q, want %q", p.Subject, tt.subject)
			}
			if p.Text != tt.text {
				t.Errorf("Text = %q, want %q", p.Text, tt.text)
			}
			if p.HTML != tt.html {
				t.Errorf("HTML = %q, want %q", p.HTML, tt.html)
			}
			if len(p.Parts) != tt.parts {
				t.Errorf("%d parts, want %d", len(p.Parts), tt.parts)
			}
			var att []string
			for _, part := range p.Parts {
				if part.Attachment {
					att = append(att, part.Filename)
					if string(part.Body) != "not the body" {
						t.Errorf("attachment body = %q", part.Body)
					}
				}
			}
			if strings.Join(att, ",") != strings.Join(tt.attachments, ",") {
				t.Errorf("attachments = %q, want %q", att, tt.attachments)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"malformed header":      "not a header line\n\nbody\n",
		"unknown charset":       "Content-Type: text/plain; charset=koi8-r\n\nbody\n",
		"bad base64":            "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!\n",
		"unknown encoding":      "Content-Transfer-Encoding: x-uuencode\n\nbody\n",
		"multipart no boundary": "Content-Type: multipart/mixed\n\nbody\n",
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := (smtptest.Message{Data: crlf(raw)}).Parse(); err == nil {
				t.Errorf("Parse succeeded on %q", raw)
			}
		})
	}
}

// Parse runs on whatever a sender under test produced; it must report bad
// input as an error, never panic or loop.
func FuzzParse(f *testing.F) {
	f.Add(crlf("Subject: =?utf-8?q?hi?=\n\nbody\n"))
	f.Add(crlf("Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/html\n\n<p>x</p>\n--b--\n"))
	f.Add(crlf("Content-Transfer-Encoding: base64\n\naGk=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := smtptest.Message{Data: data}.Parse()
		if err == nil && p == nil {
			t.Fatal("nil result without error")
		}
	})
}
