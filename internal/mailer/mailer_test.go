package mailer_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/mailer"
	"github.com/latchkey/latchkey/internal/smtptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

// newSender points a Sender at srv; rawURL, if not empty, replaces the
// server's plain URL (to add credentials or a query).
func newSender(t *testing.T, srv *smtptest.Server, cfg mailer.Config, rawURL string) (*mailer.Sender, *testkit.LogSink) {
	t.Helper()
	if rawURL == "" {
		rawURL = srv.URL()
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	cfg.URL = u
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	log, sink := testkit.NewLogger(t)
	s, err := mailer.New(cfg, log)
	if err != nil {
		t.Fatalf("mailer.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close sender: %v", err)
		}
	})
	return s, sink
}

func message(n int) mailer.Message {
	return mailer.Message{
		FromName:    "Latchkey",
		FromAddress: "no-reply@latchkey.test",
		ToName:      "Ada Lovelace",
		ToAddress:   fmt.Sprintf("ada%d@example.org", n),
		Subject:     fmt.Sprintf("Message %d", n),
		Text:        fmt.Sprintf("Text body %d", n),
		HTML:        fmt.Sprintf("<p>HTML body %d</p>", n),
		MessageID:   fmt.Sprintf("delivery-%d@latchkey.test", n),
	}
}

func mustSend(t *testing.T, s *mailer.Sender, m mailer.Message) {
	t.Helper()
	if err := s.Send(t.Context(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSendDeliversMessage(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	rawURL := "smtp://mailer:s3cret@" + srv.Addr()
	s, logs := newSender(t, srv, mailer.Config{HeloName: "latchkey.test"}, rawURL)

	const link = "https://latchkey.test/reset?token=single-use-secret"
	m := mailer.Message{
		FromName:    "Latchkey Accounts",
		FromAddress: "no-reply@latchkey.test",
		ToName:      `Zoë "Zed" Müller`,
		ToAddress:   "zoe@example.org",
		Subject:     "Réinitialiser votre mot de passe",
		Text:        "Open " + link + "\n",
		HTML:        `<p><a href="` + link + `">Reset</a></p>`,
		MessageID:   "<d6f1c0de-0000-4000-8000-000000000001@latchkey.test>",
		Headers:     map[string]string{"X-Latchkey-Delivery": "d6f1c0de-0000-4000-8000-000000000001"},
	}
	mustSend(t, s, m)

	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server has %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.From != "no-reply@latchkey.test" || len(got.To) != 1 || got.To[0] != "zoe@example.org" {
		t.Errorf("envelope = %q -> %q", got.From, got.To)
	}
	if got.AuthUser != "mailer" {
		t.Errorf("authenticated as %q, want mailer (PLAIN over loopback)", got.AuthUser)
	}
	p, err := got.Parse()
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	from, err := p.Addresses("From")
	if err != nil || len(from) != 1 || from[0].Name != "Latchkey Accounts" || from[0].Address != "no-reply@latchkey.test" {
		t.Errorf("From = %v (%v)", from, err)
	}
	to, err := p.Addresses("To")
	if err != nil || len(to) != 1 || to[0].Name != m.ToName || to[0].Address != "zoe@example.org" {
		t.Errorf("To = %v (%v)", to, err)
	}
	if p.Subject != m.Subject {
		t.Errorf("Subject = %q, want %q", p.Subject, m.Subject)
	}
	if p.Text != m.Text {
		t.Errorf("text part = %q, want %q", p.Text, m.Text)
	}
	if p.HTML != m.HTML {
		t.Errorf("HTML part = %q, want %q", p.HTML, m.HTML)
	}
	if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative;") {
		t.Errorf("Content-Type = %q, want multipart/alternative", ct)
	}
	if id := p.Header.Get("Message-Id"); id != m.MessageID {
		t.Errorf("Message-ID = %q, want %q", id, m.MessageID)
	}
	if d := p.Header.Get("X-Latchkey-Delivery"); d != m.Headers["X-Latchkey-Delivery"] {
		t.Errorf("X-Latchkey-Delivery = %q", d)
	}
	if p.Header.Get("Date") == "" {
		t.Error("no Date header")
	}

	if logs.Contains("single-use-secret") || logs.Contains("zoe@") {
		t.Errorf("log holds the body or the recipient's local part:\n%s", logs)
	}
	if !logs.Contains(`"recipient_domain":"example.org"`) {
		t.Errorf("log does not name the recipient domain:\n%s", logs)
	}
}

func TestSendSingleRenderingIsNotMultipart(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	m := message(1)
	m.HTML = ""
	mustSend(t, s, m)
	p, err := srv.Messages()[0].Parse()
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	// A single-part body gains the CRLF that ends every SMTP message.
	if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || strings.TrimSuffix(p.Text, "\n") != m.Text {
		t.Errorf("Content-Type %q, text %q", ct, p.Text)
	}
}

func TestSequentialSendsReuseOneConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	for i := range 5 {
		mustSend(t, s, message(i))
	}
	if n := srv.Stats().Connections; n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
	for _, m := range srv.Messages() {
		if m.ConnID != 1 {
			t.Errorf("message arrived on connection %d", m.ConnID)
		}
	}
}

func TestConcurrentSendsStayWithinPool(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	// A delay keeps sends overlapping, so the pool is actually tested.
	srv.SetDelay(30 * time.Millisecond)
	const pool, n = 3, 24
	s, _ := newSender(t, srv, mailer.Config{Pool: pool}, "")

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- s.Send(t.Context(), message(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("send: %v", err)
		}
	}
	if got := srv.Count(); got != n {
		t.Errorf("server has %d messages, want %d", got, n)
	}
	if c := srv.Stats().Connections; c > pool || c < 2 {
		t.Errorf("server saw %d connections, want 2..%d", c, pool)
	}
}

func TestTransientReplyIsTemporary(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	mustSend(t, s, message(0)) // so the failure happens on a pooled connection

	srv.FailNext(1, smtptest.Reply{Code: 451, EnhancedCode: [3]int{4, 3, 0}, Message: "try again later"})
	err := s.Send(t.Context(), message(1))
	if err == nil {
		t.Fatal("send succeeded despite 451")
	}
	if !mailer.Temporary(err) {
		t.Errorf("Temporary(%v) = false, want true", err)
	}
	se, ok := errors.AsType[*mailer.SMTPError](err)
	if !ok {
		t.Fatalf("error %v is not an *SMTPError", err)
	}
	if se.Code != 451 || se.EnhancedCode != "4.3.0" || se.Message != "try again later" {
		t.Errorf("SMTPError = %+v", *se)
	}
	if !strings.Contains(err.Error(), "smtp 451 4.3.0 try again later") {
		t.Errorf("error text %q lacks the reply", err)
	}

	mustSend(t, s, message(2))
	if c := srv.Stats().Connections; c != 2 {
		t.Errorf("server saw %d connections, want 2: the failed one must be replaced", c)
	}
	if got := srv.Count(); got != 2 {
		t.Errorf("server has %d messages, want 2", got)
	}
}

func TestPermanentReplyIsNotTemporary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   smtptest.Config
		fail  bool
		stage string
	}{
		{name: "end of data", fail: true, stage: "end of data"},
		{name: "recipient", stage: "RCPT TO", cfg: smtptest.Config{
			OnRcpt: func(context.Context, string, string) *smtptest.Reply {
				return &smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "mailbox unavailable"}
			},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.NewStarted(t, tc.cfg)
			s, _ := newSender(t, srv, mailer.Config{}, "")
			if tc.fail {
				srv.FailNext(1, smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "mailbox unavailable"})
			}
			err := s.Send(t.Context(), message(1))
			if err == nil {
				t.Fatal("send succeeded despite 550")
			}
			if mailer.Temporary(err) {
				t.Errorf("Temporary(%v) = true, want false", err)
			}
			se, ok := errors.AsType[*mailer.SMTPError](err)
			if !ok {
				t.Fatalf("error %v is not an *SMTPError", err)
			}
			if se.Code != 550 || se.EnhancedCode != "5.1.1" || se.Message != "mailbox unavailable" {
				t.Errorf("SMTPError = %+v", *se)
			}
			want := tc.stage + ": smtp 550 5.1.1 mailbox unavailable"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestDroppedConnectionIsTemporary(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	srv.DropNext(1)
	err := s.Send(t.Context(), message(1))
	if err == nil {
		t.Fatal("send succeeded although the server dropped the connection")
	}
	if !mailer.Temporary(err) {
		t.Errorf("Temporary(%v) = false, want true", err)
	}
	if _, ok := errors.AsType[*mailer.SMTPError](err); ok {
		t.Errorf("a dropped connection is not a reply: %v", err)
	}
	if !strings.Contains(err.Error(), "end of data") {
		t.Errorf("error %q does not say the drop came after the data", err)
	}

	mustSend(t, s, message(2))
	if got := srv.Count(); got != 1 {
		t.Errorf("server has %d messages, want 1", got)
	}
}

// A pooled connection the server closed meanwhile (here: the server
// restarted on the same address) is replaced without failing the send.
func TestStaleConnectionIsRedialled(t *testing.T) {
	t.Parallel()
	first := smtptest.NewStarted(t, smtptest.Config{})
	s, logs := newSender(t, first, mailer.Config{}, "")
	mustSend(t, s, message(1))
	addr := first.Addr()
	if err := first.Close(); err != nil {
		t.Fatalf("close first server: %v", err)
	}

	second := smtptest.NewStarted(t, smtptest.Config{Addr: addr})
	mustSend(t, s, message(2))
	if got := second.Count(); got != 1 {
		t.Errorf("restarted server has %d messages, want 1", got)
	}
	if !logs.Contains("pooled connection went stale") {
		t.Errorf("the send did not go through the stale-connection path:\n%s", logs)
	}
}

func TestInvalidMessageIsRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	for _, tc := range []struct {
		name string
		edit func(*mailer.Message)
	}{
		{"subject with CRLF", func(m *mailer.Message) { m.Subject = "Hi\r\nBcc: victim@example.net" }},
		{"subject with LF", func(m *mailer.Message) { m.Subject = "Hi\nBcc: victim@example.net" }},
		{"to name with CRLF", func(m *mailer.Message) { m.ToName = "Ada\r\nBcc: victim@example.net" }},
		{"from name with CR", func(m *mailer.Message) { m.FromName = "Latchkey\rX-Evil: 1" }},
		{"header value with LF", func(m *mailer.Message) { m.Headers = map[string]string{"X-Latchkey-Delivery": "1\nBcc: x@y.z"} }},
		{"header name with colon", func(m *mailer.Message) { m.Headers = map[string]string{"X-A: b\r\nBcc": "x"} }},
		{"header overriding Bcc", func(m *mailer.Message) { m.Headers = map[string]string{"bcc": "victim@example.net"} }},
		{"to address with name", func(m *mailer.Message) { m.ToAddress = "Ada <ada@example.org>" }},
		{"to address unparsable", func(m *mailer.Message) { m.ToAddress = "ada.example.org" }},
		{"to address with CRLF", func(m *mailer.Message) { m.ToAddress = "ada@example.org\r\nRCPT TO:<x@y.z>" }},
		{"from address missing", func(m *mailer.Message) { m.FromAddress = "" }},
		{"message id with CRLF", func(m *mailer.Message) { m.MessageID = "a@b\r\nBcc: x@y.z" }},
		{"message id without @", func(m *mailer.Message) { m.MessageID = "delivery-1" }},
		{"no body", func(m *mailer.Message) { m.Text, m.HTML = "", "" }},
		{"header given twice", func(m *mailer.Message) { m.Headers = map[string]string{"X-A": "1", "x-a": "2"} }},
		{"name too long", func(m *mailer.Message) { m.ToName = strings.Repeat("a", 257) }},
	} {
		m := message(1)
		tc.edit(&m)
		err := s.Send(t.Context(), m)
		if !errors.Is(err, mailer.ErrInvalidMessage) {
			t.Errorf("%s: err = %v, want ErrInvalidMessage", tc.name, err)
		}
		if mailer.Temporary(err) {
			t.Errorf("%s: Temporary = true, want false", tc.name)
		}
	}
	if st := srv.Stats(); st.Connections != 0 || st.Accepted != 0 {
		t.Errorf("server saw %d connections, %d messages; want none", st.Connections, st.Accepted)
	}
}

func TestCancelledContextReturnsPromptly(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.SetDelay(time.Minute) // the server never answers the data in time
	s, _ := newSender(t, srv, mailer.Config{Timeout: time.Minute}, "")

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := s.Send(ctx, message(1))
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Send took %s after cancel", elapsed)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if !mailer.Temporary(err) {
		t.Errorf("Temporary(%v) = false, want true", err)
	}

	// Already cancelled: refused without touching the network.
	before := srv.Stats().Connections
	if err := s.Send(ctx, message(2)); !errors.Is(err, context.Canceled) {
		t.Errorf("send with cancelled ctx: err = %v", err)
	}
	if after := srv.Stats().Connections; after != before {
		t.Errorf("a cancelled send dialled: %d -> %d connections", before, after)
	}
}

func TestTimeoutIsTemporary(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{Timeout: 300 * time.Millisecond}, "")
	srv.SetDelay(time.Minute)
	start := time.Now()
	err := s.Send(t.Context(), message(1))
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Send took %s with a 300ms timeout", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !mailer.Temporary(err) {
		t.Errorf("err = %v (temporary %v), want a temporary deadline error", err, mailer.Temporary(err))
	}

	srv.SetDelay(0)
	mustSend(t, s, message(2))
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{IdleTimeout: 100 * time.Millisecond}, "")
	mustSend(t, s, message(1))
	waitFor(t, "the idle connection is closed", func() bool { return srv.Stats().ActiveConnections == 0 })
	mustSend(t, s, message(2))
	if c := srv.Stats().Connections; c != 2 {
		t.Errorf("server saw %d connections, want 2 (reconnected after idling)", c)
	}
}

func TestCloseHangsUpAndRefusesSends(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	s, _ := newSender(t, srv, mailer.Config{}, "")
	mustSend(t, s, message(1))
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFor(t, "the pooled connection is closed", func() bool { return srv.Stats().ActiveConnections == 0 })
	if err := s.Send(t.Context(), message(2)); !errors.Is(err, mailer.ErrClosed) {
		t.Errorf("send after close: err = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestRequiredStartTLSIsEnforced(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{}) // offers no STARTTLS
	s, _ := newSender(t, srv, mailer.Config{}, srv.URL()+"?starttls=required")
	err := s.Send(t.Context(), message(1))
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("err = %v, want a STARTTLS refusal", err)
	}
	if got := srv.Count(); got != 0 {
		t.Errorf("server has %d messages", got)
	}
	// go-mail leaves the connection open when setup fails; Send must not.
	waitFor(t, "the refused connection is closed", func() bool { return srv.Stats().ActiveConnections == 0 })
}

func TestRefusedAuthIsReported(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{
		OnAuth: func(context.Context, string, string) *smtptest.Reply {
			return &smtptest.Reply{Code: 535, EnhancedCode: [3]int{5, 7, 8}, Message: "bad credentials"}
		},
	})
	s, _ := newSender(t, srv, mailer.Config{}, "smtp://mailer:wrong@"+srv.Addr())
	err := s.Send(t.Context(), message(1))
	se, ok := errors.AsType[*mailer.SMTPError](err)
	if !ok || se.Code != 535 || se.EnhancedCode != "5.7.8" {
		t.Fatalf("err = %v, want an SMTPError 535 5.7.8", err)
	}
	if !strings.Contains(err.Error(), "connect: SMTP AUTH failed") {
		t.Errorf("error %q does not say AUTH failed", err)
	}
	waitFor(t, "the refused connection is closed", func() bool { return srv.Stats().ActiveConnections == 0 })
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		cfg  mailer.Config
		want string
	}{
		{url: "http://mail.example.org", want: "scheme"},
		{url: "smtp://", want: "no host"},
		{url: "smtp://mail.example.org:0", want: "port"},
		{url: "smtp://mail.example.org:25?starttls=maybe", want: "starttls must be"},
		{url: "smtp://mail.example.org:25?startls=required", want: "not understood"},
		{url: "smtps://mail.example.org?starttls=required", want: "does not apply"},
		{url: "smtp://u:secretpw@mail.example.org?starttls=off", want: "unencrypted"},
		{url: "smtp://mail.example.org", cfg: mailer.Config{Pool: -1}, want: "pool"},
		{url: "smtp://mail.example.org", cfg: mailer.Config{Timeout: -time.Second}, want: "timeout"},
		{url: "smtp://mail.example.org", cfg: mailer.Config{HeloName: "a b"}, want: "HELO"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.url, err)
		}
		tc.cfg.URL = u
		log, _ := testkit.NewLogger(t)
		s, err := mailer.New(tc.cfg, log)
		if err == nil {
			_ = s.Close()
			t.Errorf("New(%s) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s) = %v, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("New(%s) error leaks the password: %v", tc.url, err)
		}
	}

	for _, ok := range []string{
		"smtp://mail.example.org",
		"smtp://u:p@mail.example.org:587?starttls=required",
		"smtp://u:p@mail.example.org:587", // PLAIN still waits for STARTTLS
		"smtp://u:p@127.0.0.2:1025?starttls=off",
		"smtps://u:p@mail.example.org",
		"smtp://[::1]:2525?starttls=opportunistic",
	} {
		u, _ := url.Parse(ok)
		log, _ := testkit.NewLogger(t)
		s, err := mailer.New(mailer.Config{URL: u}, log)
		if err != nil {
			t.Errorf("New(%s): %v", ok, err)
			continue
		}
		_ = s.Close()
	}
}
