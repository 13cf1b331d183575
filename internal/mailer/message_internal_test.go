package mailer

import (
	"bytes"
	"errors"
	netmail "net/mail"
	"testing"
)

// Whatever a caller passes as names, subject or header value, a message
// that prepare accepts has exactly the headers it was meant to have.
func FuzzPrepareNeverInjectsHeaders(f *testing.F) {
	f.Add("Ada Lovelace", "Reset your password", "d6f1c0de")
	f.Add("Ada\r\nBcc: victim@example.net", "Hi", "1")
	f.Add(`Zoë "Z" Müller`, "Réinitialiser\tvotre mot de passe", "v\nBcc: x@y.z")
	f.Add("=?utf-8?q?Bcc=3A_x=40y=2Ez?=", "=?utf-8?q?a=0D=0ABcc=3A_x=40y=2Ez?=", "\u2028")
	f.Fuzz(func(t *testing.T, name, subject, header string) {
		m := Message{
			FromName: "Latchkey", FromAddress: "no-reply@latchkey.test",
			ToName: name, ToAddress: "ada@example.org",
			Subject: subject, Text: "body",
			Headers: map[string]string{"X-Latchkey-Delivery": header},
		}
		p, err := m.prepare()
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("prepare: %v is not ErrInvalidMessage", err)
			}
			return
		}
		msg, err := netmail.ReadMessage(bytes.NewReader(p.data))
		if err != nil {
			t.Fatalf("rendered message does not parse: %v\n%s", err, p.data)
		}
		for _, key := range []string{"Bcc", "Cc", "Reply-To", "Sender"} {
			if v, ok := msg.Header[key]; ok {
				t.Fatalf("injected %s: %q\n%s", key, v, p.data)
			}
		}
		for _, key := range []string{"From", "To", "Subject", "Message-Id", "X-Latchkey-Delivery"} {
			if n := len(msg.Header[key]); n != 1 {
				t.Fatalf("%d %s headers, want 1\n%s", n, key, p.data)
			}
		}
		to, err := msg.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != "ada@example.org" {
			t.Fatalf("To = %v (%v)\n%s", to, err, p.data)
		}
		if to[0].Name != name {
			t.Fatalf("To name = %q, want %q\n%s", to[0].Name, name, p.data)
		}
	})
}
