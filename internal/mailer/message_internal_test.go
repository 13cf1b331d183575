package mailer

import (
	"bytes"
	"errors"
	netmail "net/mail"
	"strings"
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
		msg, err := netmail.ReadMessage(bytes.NewReader(p.intl.data))
		if err != nil {
			t.Fatalf("rendered message does not parse: %v\n%s", err, p.intl.data)
		}
		for _, key := range []string{"Bcc", "Cc", "Reply-To", "Sender"} {
			if v, ok := msg.Header[key]; ok {
				t.Fatalf("injected %s: %q\n%s", key, v, p.intl.data)
			}
		}
		for _, key := range []string{"From", "To", "Subject", "Message-Id", "X-Latchkey-Delivery"} {
			if n := len(msg.Header[key]); n != 1 {
				t.Fatalf("%d %s headers, want 1\n%s", n, key, p.intl.data)
			}
		}
		to, err := msg.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != "ada@example.org" {
			t.Fatalf("To = %v (%v)\n%s", to, err, p.intl.data)
		}
		if to[0].Name != name {
			t.Fatalf("To name = %q, want %q\n%s", to[0].Name, name, p.intl.data)
		}
	})
}

// Whatever address prepare accepts, its rendering for a server without
// SMTPUTF8 is ASCII from the envelope to the end of the header, and names
// the same mailbox; or there is none, and ErrNeedsSMTPUTF8 says why.
func FuzzPrepareASCIIFormIsASCII(f *testing.F) {
	for _, seed := range []string{"anna@bücher.example", "anna@Bücher.Example", "用户@例子.广告", "ada@example.org",
		`"zoë x"@example.org`, "a@[127.0.0.1]", "anna@xn--bcher-kva.example", "anna@faß.de"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		m := Message{FromName: "Latchkey", FromAddress: "no-reply@latchkey.test", ToName: "Zoë", ToAddress: addr, Subject: "Hi", Text: "body"}
		p, err := m.prepare()
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("prepare: %v is not ErrInvalidMessage", err)
			}
			return
		}
		a, err := p.formFor(false)
		if err != nil {
			if !errors.Is(err, ErrNeedsSMTPUTF8) || isASCII(addr[:strings.LastIndexByte(addr, '@')]) {
				t.Fatalf("no ASCII form for %q: %v", addr, err)
			}
			return
		}
		header, _, _ := bytes.Cut(a.data, []byte("\r\n\r\n"))
		if !isASCII(a.from) || !isASCII(a.to) || !isASCII(string(header)) {
			t.Fatalf("ASCII form of %q is not ASCII: %q %q\n%s", addr, a.from, a.to, header)
		}
		msg, err := netmail.ReadMessage(bytes.NewReader(a.data))
		if err != nil {
			t.Fatalf("rendered message does not parse: %v\n%s", err, a.data)
		}
		to, err := msg.Header.AddressList("To")
		// The header names the mailbox the envelope does.
		if err != nil || len(to) != 1 || (&netmail.Address{Address: to[0].Address}).String() != a.to {
			t.Fatalf("To = %v (%v), envelope %q\n%s", to, err, a.to, a.data)
		}
		if isASCII(addr) && to[0].Address != addr {
			t.Fatalf("ASCII address %q became %q", addr, to[0].Address)
		}
		if u, _ := p.formFor(true); isASCII(addr) && u != a {
			t.Fatalf("an ASCII message has two renderings")
		}
	})
}
