package mailer_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/mailer"
	"github.com/latchkey/latchkey/internal/smtptest"
)

// headerSection is the message's header, up to the blank line.
func headerSection(data []byte) []byte {
	h, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	return h
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// A server without SMTPUTF8 refuses a non-ASCII address (553 5.6.7, as
// smtptest does): the domain must travel as its A-label, in the envelope
// and in the From and To headers alike, which then hold only ASCII.
func TestInternationalDomainWithoutSMTPUTF8GoesAsALabel(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	m := message(1)
	m.ToName = "Anna Müller"
	m.ToAddress = "anna@Bücher.example"
	m.FromAddress = "no-reply@latchkey.bücher.example"
	mustSend(t, s, m)

	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server has %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.From != "no-reply@latchkey.xn--bcher-kva.example" || len(got.To) != 1 || got.To[0] != "anna@xn--bcher-kva.example" {
		t.Errorf("envelope = %q -> %q, want the A-labels", got.From, got.To)
	}
	if got.SMTPUTF8 {
		t.Error("MAIL FROM asked for SMTPUTF8, which the server does not offer")
	}
	if h := headerSection(got.Data); !isASCII(h) {
		t.Errorf("header holds non-ASCII bytes without SMTPUTF8:\n%s", h)
	}
	p, err := got.Parse()
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	to, err := p.Addresses("To")
	if err != nil || len(to) != 1 || to[0].Name != "Anna Müller" || to[0].Address != "anna@xn--bcher-kva.example" {
		t.Errorf("To = %v (%v)", to, err)
	}
	from, err := p.Addresses("From")
	if err != nil || len(from) != 1 || from[0].Address != "no-reply@latchkey.xn--bcher-kva.example" {
		t.Errorf("From = %v (%v)", from, err)
	}
}

// A server that offers SMTPUTF8 gets the address as it was given, in the
// envelope and (RFC 6532) in the header, in a transaction that asks for
// SMTPUTF8; a non-ASCII local part, which has no ASCII form, goes out too.
func TestInternationalAddressWithSMTPUTF8GoesAsGiven(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{SMTPUTF8: true})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	for i, addr := range []string{"anna@bücher.example", "用户@例子.广告"} {
		m := message(i)
		m.ToAddress = addr
		mustSend(t, s, m)
		got := srv.Messages()[i]
		if !got.SMTPUTF8 || len(got.To) != 1 || got.To[0] != addr {
			t.Errorf("envelope to %q with SMTPUTF8 %v, want %q with SMTPUTF8", got.To, got.SMTPUTF8, addr)
		}
		p, err := got.Parse()
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if to, err := p.Addresses("To"); err != nil || len(to) != 1 || to[0].Address != addr {
			t.Errorf("To = %v (%v), want %q", to, err, addr)
		}
	}
}

// A mailbox whose local part is not ASCII has no name a server without
// SMTPUTF8 can take. The send fails at once, permanently, saying why, and
// sends nothing; the connection stays in the pool for the next message.
func TestNonASCIILocalPartWithoutSMTPUTF8FailsPermanently(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, logs := newSender(t, srv, mailer.Config{}, "")
	mustSend(t, s, message(1)) // a pooled connection, to show it survives

	m := message(2)
	m.ToAddress = "用户@例子.广告"
	err := s.Send(t.Context(), m)
	if !errors.Is(err, mailer.ErrNeedsSMTPUTF8) {
		t.Fatalf("err = %v, want ErrNeedsSMTPUTF8", err)
	}
	if mailer.Temporary(err) {
		t.Error("Temporary = true: the delivery would be retried until it dead-letters")
	}
	if !strings.Contains(err.Error(), "to address") || !strings.Contains(err.Error(), "SMTPUTF8") {
		t.Errorf("error %q does not say which address needs what", err)
	}
	if strings.Contains(err.Error(), "用户") || logs.Contains("用户") {
		t.Errorf("error or log holds the local part: %v\n%s", err, logs)
	}

	mustSend(t, s, message(3))
	if st := srv.Stats(); st.Accepted != 2 || st.Connections != 1 || st.MailRejected != 0 || st.RcptRejected != 0 {
		t.Errorf("Stats = %+v, want messages 1 and 3 on one connection and nothing refused", st)
	}
}

// A non-ASCII domain that has no A-label is refused before connecting, like
// any message that can never be sent.
func TestDomainWithoutALabelIsInvalid(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{SMTPUTF8: true})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	for _, addr := range []string{"anna@-bücher.example", "anna@bü_cher.example"} {
		m := message(1)
		m.ToAddress = addr
		if err := s.Send(t.Context(), m); !errors.Is(err, mailer.ErrInvalidMessage) {
			t.Errorf("%s: err = %v, want ErrInvalidMessage", addr, err)
		}
	}
	if st := srv.Stats(); st.Connections != 0 {
		t.Errorf("server saw %d connections, want none", st.Connections)
	}
}
