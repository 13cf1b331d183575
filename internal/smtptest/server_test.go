package smtptest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	netsmtp "net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/wneessen/go-mail"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/smtptest"
)

// newMailClient is a go-mail client as the service would configure one
// against this server: plain SMTP, no TLS.
func newMailClient(t *testing.T, srv *smtptest.Server, opts ...mail.Option) *mail.Client {
	t.Helper()
	base := []mail.Option{
		mail.WithPort(srv.Port()),
		mail.WithTLSPolicy(mail.NoTLS),
		mail.WithTimeout(5 * time.Second),
	}
	c, err := mail.NewClient(srv.Host(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("new go-mail client: %v", err)
	}
	return c
}

func newMsg(t *testing.T, to, subject, text, html string) *mail.Msg {
	t.Helper()
	m := mail.NewMsg()
	if err := m.From("Latchkey <noreply@latchkey.test>"); err != nil {
		t.Fatalf("set From: %v", err)
	}
	if err := m.To(to); err != nil {
		t.Fatalf("set To: %v", err)
	}
	m.Subject(subject)
	m.SetBodyString(mail.TypeTextPlain, text)
	if html != "" {
		m.AddAlternativeString(mail.TypeTextHTML, html)
	}
	return m
}

// sendNetSMTP runs one transaction on an open net/smtp client and returns
// the end-of-data error, which is where injected replies surface.
func sendNetSMTP(c *netsmtp.Client, from, to, subject string) error {
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	body := "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\nhello\r\n"
	if _, err := w.Write([]byte(body)); err != nil {
		return fmt.Errorf("write body: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return nil
}

func dialNetSMTP(t *testing.T, srv *smtptest.Server) *netsmtp.Client {
	t.Helper()
	c, err := netsmtp.Dial(srv.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func replyCode(t *testing.T, err error) int {
	t.Helper()
	var tpErr *textproto.Error
	if !errors.As(err, &tpErr) {
		t.Fatalf("error %v (%T) is not an SMTP reply", err, err)
	}
	return tpErr.Code
}

func TestAcceptedMessageIsRecordedAndParsed(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := smtptest.NewStarted(t, smtptest.Config{Now: func() time.Time { return now }})

	client := newMailClient(t, srv,
		mail.WithSMTPAuth(mail.SMTPAuthPlainNoEnc),
		mail.WithUsername("latchkey-sender"),
		mail.WithPassword("any password works"))
	subject := "Your key for Zürich expires soon ✓"
	text := "Hello Ana,\nyour key expires at 12:00.\nLine with = sign and ünïcödé."
	html := `<p>Hello <b>Ana</b>, your key expires at <a href="https://x.test/?a=1&b=2">12:00</a>.</p>`
	if err := client.DialAndSend(newMsg(t, "ana@example.com", subject, text, html)); err != nil {
		t.Fatalf("send: %v", err)
	}

	// Recorded before the 250 went out, so no waiting is needed.
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("Messages() has %d, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "noreply@latchkey.test" {
		t.Errorf("From = %q", m.From)
	}
	if len(m.To) != 1 || m.To[0] != "ana@example.com" {
		t.Errorf("To = %q", m.To)
	}
	if !m.ReceivedAt.Equal(now) {
		t.Errorf("ReceivedAt = %v, want the injected clock's %v", m.ReceivedAt, now)
	}
	if m.ConnID != 1 {
		t.Errorf("ConnID = %d, want 1", m.ConnID)
	}
	if m.AuthUser != "latchkey-sender" {
		t.Errorf("AuthUser = %q", m.AuthUser)
	}

	p, err := m.Parse()
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if p.Subject != subject {
		t.Errorf("Subject = %q, want %q", p.Subject, subject)
	}
	if raw := p.Header.Get("Subject"); raw == subject {
		t.Errorf("raw Subject %q was not RFC 2047 encoded, so decoding was not exercised", raw)
	}
	if got := strings.TrimRight(p.Text, "\n"); got != text {
		t.Errorf("Text = %q, want %q", got, text)
	}
	if got := strings.TrimRight(p.HTML, "\n"); got != html {
		t.Errorf("HTML = %q, want %q", got, html)
	}
	to, err := p.Addresses("To")
	if err != nil || len(to) != 1 || to[0].Address != "ana@example.com" {
		t.Errorf("Addresses(To) = %v, %v", to, err)
	}
	if got := p.Get("From"); !strings.Contains(got, "noreply@latchkey.test") {
		t.Errorf("Get(From) = %q", got)
	}

	st := srv.Stats()
	if st.Accepted != 1 || st.Rejected != 0 || st.Connections != 1 || st.Auths != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if srv.Count() != 1 {
		t.Errorf("Count = %d", srv.Count())
	}
}

func TestFailNextTransientThenSuccess(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.FailNext(1, smtptest.Reply{Code: 451, EnhancedCode: [3]int{4, 3, 0}, Message: "try again later"})
	client := newMailClient(t, srv)

	err := client.DialAndSend(newMsg(t, "a@example.com", "first try", "body", ""))
	var sendErr *mail.SendError
	if !errors.As(err, &sendErr) {
		t.Fatalf("send error = %v (%T), want *mail.SendError", err, err)
	}
	if !sendErr.IsTemp() || sendErr.ErrorCode() != 451 || sendErr.EnhancedStatusCode() != "4.3.0" {
		t.Errorf("send error temp=%v code=%d enhanced=%q, want temporary 451 4.3.0",
			sendErr.IsTemp(), sendErr.ErrorCode(), sendErr.EnhancedStatusCode())
	}
	if srv.Count() != 0 {
		t.Errorf("a rejected message was recorded")
	}

	if err := client.DialAndSend(newMsg(t, "a@example.com", "retry", "body", "")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	st := srv.Stats()
	if st.Accepted != 1 || st.Rejected != 1 {
		t.Errorf("Stats = %+v, want 1 accepted, 1 rejected", st)
	}
	p, err := srv.Messages()[0].Parse()
	if err != nil || p.Subject != "retry" {
		t.Errorf("recorded subject = %q, %v", p.Subject, err)
	}
}

func TestFailNextPermanent(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.FailNext(1, smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 7, 1}, Message: "relay denied"})
	c := dialNetSMTP(t, srv)

	err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "one")
	if code := replyCode(t, err); code != 550 {
		t.Fatalf("end-of-data code = %d, want 550", code)
	}
	if !strings.Contains(err.Error(), "5.7.1 relay denied") {
		t.Errorf("reply text %q lacks the enhanced code and message", err)
	}
	// The fault was for one message only; the same connection carries on.
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "two"); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("quit: %v", err)
	}
	if st := srv.Stats(); st.Accepted != 1 || st.Rejected != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestFaultsAreConsumedInOrder(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.FailNext(2, smtptest.Reply{Code: 421})
	srv.FailNext(1, smtptest.Reply{Code: 554})
	c := dialNetSMTP(t, srv)

	var codes []int
	for i := range 4 {
		err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", fmt.Sprint(i))
		if err == nil {
			codes = append(codes, 250)
			continue
		}
		codes = append(codes, replyCode(t, err))
		// A 421 tells the client the service is closing, but go-smtp keeps
		// the connection usable, so reset and go on.
		if err := c.Reset(); err != nil {
			t.Fatalf("RSET: %v", err)
		}
	}
	if fmt.Sprint(codes) != "[421 421 554 250]" {
		t.Errorf("codes = %v, want [421 421 554 250]", codes)
	}
}

func TestConnectionReuseIsVisible(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	client := newMailClient(t, srv)

	// One DialAndSend with two messages uses one connection.
	if err := client.DialAndSend(
		newMsg(t, "a@example.com", "one", "1", ""),
		newMsg(t, "b@example.com", "two", "2", ""),
	); err != nil {
		t.Fatalf("send two: %v", err)
	}
	st := srv.Stats()
	if st.Connections != 1 || st.Accepted != 2 {
		t.Fatalf("after one DialAndSend: Stats = %+v, want 1 connection, 2 accepted", st)
	}
	msgs := srv.Messages()
	if msgs[0].ConnID != msgs[1].ConnID {
		t.Errorf("ConnIDs %d and %d differ over one connection", msgs[0].ConnID, msgs[1].ConnID)
	}

	// A second DialAndSend dials again: a new connection and a new ID.
	if err := client.DialAndSend(newMsg(t, "c@example.com", "three", "3", "")); err != nil {
		t.Fatalf("send third: %v", err)
	}
	if st := srv.Stats(); st.Connections != 2 {
		t.Errorf("Connections = %d, want 2", st.Connections)
	}
	msgs = srv.Messages()
	if msgs[2].ConnID == msgs[0].ConnID {
		t.Errorf("third message reused ConnID %d from a closed connection", msgs[2].ConnID)
	}
}

func TestConnectionReuseWithNetSMTP(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	c := dialNetSMTP(t, srv)
	for i := range 2 {
		if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", fmt.Sprint(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if st := srv.Stats(); st.Connections != 1 || st.ActiveConnections != 1 || st.Accepted != 2 {
		t.Errorf("Stats with the client still connected = %+v", st)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("quit: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	// The server notices QUIT asynchronously; there is no event to wait on,
	// so poll briefly for the open-connection gauge to drop.
	for srv.Stats().ActiveConnections != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("ActiveConnections still %d after QUIT", srv.Stats().ActiveConnections)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestDropNextCountsNothingAccepted(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.DropNext(1)
	c := dialNetSMTP(t, srv)

	err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "lost")
	if err == nil {
		t.Fatal("send over a dropped connection succeeded")
	}
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		t.Fatalf("got SMTP reply %v; a drop must give no reply at all", tpErr)
	}
	st := srv.Stats()
	if st.Dropped != 1 || st.Accepted != 0 || st.Rejected != 0 || srv.Count() != 0 {
		t.Errorf("Stats = %+v, Count = %d; want only Dropped=1", st, srv.Count())
	}

	// The client's retry on a fresh connection is delivered.
	c2 := dialNetSMTP(t, srv)
	if err := sendNetSMTP(c2, "a@latchkey.test", "b@example.com", "retried"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if st := srv.Stats(); st.Accepted != 1 || st.Connections != 2 {
		t.Errorf("after retry Stats = %+v", st)
	}
}

func TestDropNextWithGoMail(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.DropNext(1)
	client := newMailClient(t, srv)
	err := client.DialAndSend(newMsg(t, "a@example.com", "lost", "x", ""))
	if err == nil {
		t.Fatal("go-mail reported success for a dropped message")
	}
	if st := srv.Stats(); st.Dropped != 1 || st.Accepted != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestSetDelay(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	const delay = 150 * time.Millisecond
	srv.SetDelay(delay)
	c := dialNetSMTP(t, srv)

	start := time.Now()
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "slow"); err != nil {
		t.Fatalf("send: %v", err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("reply came after %v, before the %v delay", took, delay)
	}

	// Removing a delay far longer than the client's patience proves the
	// removal without a timing-sensitive upper bound.
	srv.SetDelay(time.Hour)
	srv.SetDelay(0)
	fast, err := gosmtp.Dial(srv.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = fast.Close() }()
	fast.SubmissionTimeout = 10 * time.Second
	if err := fast.SendMail("a@latchkey.test", []string{"b@example.com"}, strings.NewReader("Subject: fast\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("send with the delay removed: %v", err)
	}
}

// A client with a submission timeout shorter than the delay gives up; the
// server has the message but the client cannot know.
func TestSetDelayTriggersClientTimeout(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	srv.SetDelay(time.Minute)

	c, err := gosmtp.Dial(srv.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = c.Close() }()
	c.SubmissionTimeout = 100 * time.Millisecond
	err = c.SendMail("a@latchkey.test", []string{"b@example.com"}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("send error = %v, want a timeout", err)
	}
	// Close must cut the minute-long delay short rather than wait it out.
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %v with a delay pending", took)
	}
}

func TestWaitForCount(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})

	t.Run("times out", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		got, err := srv.WaitForCount(ctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if len(got) != 0 {
			t.Errorf("returned %d messages", len(got))
		}
	})

	t.Run("wakes on arrival", func(t *testing.T) {
		sent := make(chan error, 1)
		go func() {
			c, err := netsmtp.Dial(srv.Addr())
			if err != nil {
				sent <- err
				return
			}
			defer func() { _ = c.Close() }()
			for i := range 3 {
				if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", fmt.Sprint(i)); err != nil {
					sent <- err
					return
				}
			}
			sent <- c.Quit()
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		got, err := srv.WaitForCount(ctx, 3)
		if err != nil {
			t.Fatalf("WaitForCount: %v", err)
		}
		if len(got) < 3 {
			t.Errorf("returned %d messages, want at least 3", len(got))
		}
		if err := <-sent; err != nil {
			t.Fatalf("sender: %v", err)
		}
	})
}

func TestWaitForCountReturnsOnClose(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	done := make(chan error, 1)
	go func() {
		_, err := srv.WaitForCount(context.Background(), 1)
		done <- err
	}()
	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, smtptest.ErrClosed) {
			t.Errorf("err = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitForCount did not return after Close")
	}
}

func TestOnRcptRejectsSomeRecipients(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{
		OnRcpt: func(_ context.Context, _, to string) *smtptest.Reply {
			if strings.HasPrefix(to, "unknown@") {
				return &smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "no such user"}
			}
			return nil
		},
	})
	c := dialNetSMTP(t, srv)
	if err := c.Mail("a@latchkey.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("unknown@example.com"); replyCode(t, err) != 550 {
		t.Fatalf("RCPT unknown = %v, want 550", err)
	}
	if err := c.Rcpt("ok@example.com"); err != nil {
		t.Fatalf("RCPT ok: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: hi\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of data: %v", err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "ok@example.com" {
		t.Fatalf("recorded %+v, want one message to ok@example.com only", msgs)
	}
	if st := srv.Stats(); st.RcptRejected != 1 {
		t.Errorf("RcptRejected = %d", st.RcptRejected)
	}
}

func TestOnDataDecides(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{
		OnData: func(_ context.Context, m smtptest.Message) *smtptest.Reply {
			p, err := m.Parse()
			if err != nil {
				return &smtptest.Reply{Code: 554, Message: err.Error()}
			}
			switch p.Subject {
			case "greylist":
				return &smtptest.Reply{Code: 450, EnhancedCode: [3]int{4, 7, 1}, Message: "greylisted"}
			case "custom ok":
				return &smtptest.Reply{Code: 250, EnhancedCode: [3]int{2, 0, 0}, Message: "queued as ABC123"}
			}
			return nil
		},
	})
	c := dialNetSMTP(t, srv)
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "greylist"); replyCode(t, err) != 450 {
		t.Fatalf("greylist send = %v", err)
	}
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "custom ok"); err != nil {
		t.Fatalf("custom ok: %v", err)
	}
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "plain"); err != nil {
		t.Fatalf("plain: %v", err)
	}

	// FailNext takes precedence over the hook.
	srv.FailNext(1, smtptest.Reply{Code: 452})
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "plain"); replyCode(t, err) != 452 {
		t.Fatalf("FailNext under a hook = %v", err)
	}
	if st := srv.Stats(); st.Accepted != 2 || st.Rejected != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestCustomOKTextReachesClient(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{
		OnData: func(context.Context, smtptest.Message) *smtptest.Reply {
			return &smtptest.Reply{Code: 250, EnhancedCode: [3]int{2, 0, 0}, Message: "queued as ABC123"}
		},
	})
	c, err := gosmtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Mail("a@latchkey.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: x\r\n\r\ny\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("end of data: %v", err)
	}
	if !strings.Contains(resp.StatusText, "queued as ABC123") {
		t.Errorf("status text = %q", resp.StatusText)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{
		OnAuth: func(_ context.Context, username, _ string) *smtptest.Reply {
			if username == "revoked" {
				return &smtptest.Reply{Code: 535, EnhancedCode: [3]int{5, 7, 8}, Message: "bad credentials"}
			}
			return nil
		},
	})

	t.Run("LOGIN", func(t *testing.T) {
		client := newMailClient(t, srv,
			mail.WithSMTPAuth(mail.SMTPAuthLoginNoEnc),
			mail.WithUsername("login-user"),
			mail.WithPassword("pw"))
		if err := client.DialAndSend(newMsg(t, "a@example.com", "login", "x", "")); err != nil {
			t.Fatalf("send: %v", err)
		}
	})
	t.Run("PLAIN with net/smtp", func(t *testing.T) {
		c := dialNetSMTP(t, srv)
		if err := c.Auth(netsmtp.PlainAuth("", "plain-user", "pw", srv.Host())); err != nil {
			t.Fatalf("auth: %v", err)
		}
		if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "plain"); err != nil {
			t.Fatalf("send: %v", err)
		}
	})
	t.Run("rejected by OnAuth", func(t *testing.T) {
		c := dialNetSMTP(t, srv)
		err := c.Auth(netsmtp.PlainAuth("", "revoked", "pw", srv.Host()))
		if replyCode(t, err) != 535 {
			t.Fatalf("auth = %v, want 535", err)
		}
	})
	t.Run("no auth", func(t *testing.T) {
		c := dialNetSMTP(t, srv)
		if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "anonymous"); err != nil {
			t.Fatalf("send: %v", err)
		}
	})

	users := map[string]string{}
	for _, m := range srv.Messages() {
		p, err := m.Parse()
		if err != nil {
			t.Fatal(err)
		}
		users[p.Subject] = m.AuthUser
	}
	want := map[string]string{"login": "login-user", "plain": "plain-user", "anonymous": ""}
	if fmt.Sprint(users) != fmt.Sprint(want) {
		t.Errorf("AuthUser by subject = %v, want %v", users, want)
	}
	if st := srv.Stats(); st.Auths != 2 {
		t.Errorf("Auths = %d, want 2", st.Auths)
	}
}

func TestMaxMessageBytes(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{MaxMessageBytes: 64})
	c := dialNetSMTP(t, srv)
	if err := c.Mail("a@latchkey.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: big\r\n\r\n" + strings.Repeat("x", 500) + "\r\n")); err != nil {
		t.Fatal(err)
	}
	if code := replyCode(t, w.Close()); code != 552 {
		t.Fatalf("code = %d, want 552", code)
	}
	if st := srv.Stats(); st.Rejected != 1 || st.Accepted != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestConcurrentSenders(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	// Fewer failures than messages per sender, so every connection
	// delivers at least one message and shows up among the ConnIDs.
	const senders, each, failures = 8, 5, 4
	srv.FailNext(failures, smtptest.Reply{Code: 451})

	var wg sync.WaitGroup
	var mu sync.Mutex
	var rejected int
	for i := range senders {
		wg.Go(func() {
			c, err := netsmtp.Dial(srv.Addr())
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer func() { _ = c.Close() }()
			for j := range each {
				err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", fmt.Sprintf("%d-%d", i, j))
				if err != nil {
					mu.Lock()
					rejected++
					mu.Unlock()
					_ = c.Reset()
				}
			}
			_ = c.Quit()
		})
	}
	// Readers race with the writers on purpose; -race checks the locking.
	readCtx, stopReading := context.WithCancel(t.Context())
	var readers sync.WaitGroup
	readers.Go(func() {
		for readCtx.Err() == nil {
			_ = srv.Messages()
			_ = srv.Stats()
			_ = srv.Count()
		}
	})
	wg.Wait()
	stopReading()
	readers.Wait()

	st := srv.Stats()
	if rejected != failures || st.Rejected != failures {
		t.Errorf("client saw %d rejections, server counted %d, want %d", rejected, st.Rejected, failures)
	}
	if st.Accepted != senders*each-failures || srv.Count() != senders*each-failures {
		t.Errorf("Accepted = %d, Count = %d, want %d", st.Accepted, srv.Count(), senders*each-failures)
	}
	if st.Connections != senders {
		t.Errorf("Connections = %d, want %d", st.Connections, senders)
	}
	ids := map[uint64]int{}
	for _, m := range srv.Messages() {
		ids[m.ConnID]++
	}
	if len(ids) != senders {
		t.Errorf("messages came from %d connection IDs, want %d", len(ids), senders)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	c := dialNetSMTP(t, srv)
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "before"); err != nil {
		t.Fatal(err)
	}
	srv.FailNext(5, smtptest.Reply{Code: 451})
	srv.SetDelay(time.Minute)
	srv.Reset()

	if srv.Count() != 0 || srv.Stats().Accepted != 0 || srv.Stats().Connections != 0 {
		t.Errorf("after Reset: Count = %d, Stats = %+v", srv.Count(), srv.Stats())
	}
	if got := srv.Stats().ActiveConnections; got != 1 {
		t.Errorf("ActiveConnections = %d after Reset, want the open client counted", got)
	}
	// Faults and delay were cleared, so this is accepted promptly.
	if err := sendNetSMTP(c, "a@latchkey.test", "b@example.com", "after"); err != nil {
		t.Fatalf("send after reset: %v", err)
	}
	if srv.Count() != 1 {
		t.Errorf("Count = %d", srv.Count())
	}
}

// Close with an idle client, a client stuck in a delayed reply, and a hook
// blocked on its context must return, and leave no goroutine behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	hookEntered := make(chan struct{})
	srv, err := smtptest.New(smtptest.Config{
		OnData: func(ctx context.Context, m smtptest.Message) *smtptest.Reply {
			if p, err := m.Parse(); err == nil && p.Subject == "block" {
				close(hookEntered)
				<-ctx.Done()
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}

	idle, err := netsmtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = idle.Close() }()
	if err := sendNetSMTP(idle, "a@latchkey.test", "b@example.com", "done"); err != nil {
		t.Fatal(err)
	}

	blocked := make(chan error, 1)
	go func() {
		c, err := netsmtp.Dial(srv.Addr())
		if err != nil {
			blocked <- err
			return
		}
		defer func() { _ = c.Close() }()
		blocked <- sendNetSMTP(c, "a@latchkey.test", "b@example.com", "block")
	}()
	<-hookEntered

	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-blocked; err == nil {
		t.Error("the blocked send succeeded although the server closed")
	}
	if err := idle.Noop(); err == nil {
		t.Error("idle client still talks to a closed server")
	}
	if st := srv.Stats(); st.ActiveConnections != 0 {
		t.Errorf("ActiveConnections = %d after Close", st.ActiveConnections)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Error("listener still accepts after Close")
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()

	if _, err := smtptest.New(smtptest.Config{Addr: "no-port"}); err == nil {
		t.Error("New accepted an address without a port")
	}
	if _, err := smtptest.New(smtptest.Config{MaxMessageBytes: -1}); err == nil {
		t.Error("New accepted a negative MaxMessageBytes")
	}

	srv, err := smtptest.New(smtptest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != "" || srv.URL() != "" || srv.Port() != 0 {
		t.Errorf("before Start: Addr %q URL %q Port %d", srv.Addr(), srv.URL(), srv.Port())
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err == nil {
		t.Error("second Start succeeded")
	}
	if srv.Host() != "127.0.0.1" || srv.Port() == 0 {
		t.Errorf("Host %q Port %d, want loopback and a real port", srv.Host(), srv.Port())
	}
	if want := "smtp://" + srv.Addr(); srv.URL() != want {
		t.Errorf("URL = %q, want %q", srv.URL(), want)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); !errors.Is(err, smtptest.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}

	// Closing a server that never started is fine too.
	unstarted, err := smtptest.New(smtptest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

func TestFailNextRejectsNonFailureCodes(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	for _, code := range []int{0, 250, 354, 600} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("FailNext with code %d did not panic", code)
				}
			}()
			srv.FailNext(1, smtptest.Reply{Code: code})
		}()
	}
}

// Without SMTPUTF8 the server refuses non-ASCII addresses as a real relay
// does; with it, a client that asks (net/smtp does when it is offered) may
// send them, and the message records that it asked.
func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	t.Run("not offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.NewStarted(t, smtptest.Config{})
		c := dialNetSMTP(t, srv)
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			t.Fatal("SMTPUTF8 offered by default")
		}
		if err := c.Mail("zoë@latchkey.test"); replyCode(t, err) != 553 {
			t.Fatalf("MAIL with a non-ASCII address = %v, want 553", err)
		}
		if err := c.Mail("a@latchkey.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("anna@bücher.example"); replyCode(t, err) != 553 {
			t.Fatalf("RCPT with a non-ASCII address = %v, want 553", err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
		if err := sendNetSMTP(c, "a@latchkey.test", "anna@xn--bcher-kva.example", "A-label"); err != nil {
			t.Fatalf("send to the A-label: %v", err)
		}
		msgs := srv.Messages()
		if len(msgs) != 1 || msgs[0].To[0] != "anna@xn--bcher-kva.example" || msgs[0].SMTPUTF8 {
			t.Fatalf("recorded %+v", msgs)
		}
		if st := srv.Stats(); st.MailRejected != 1 || st.RcptRejected != 1 {
			t.Errorf("Stats = %+v, want one MAIL and one RCPT refused", st)
		}
	})
	t.Run("offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.NewStarted(t, smtptest.Config{SMTPUTF8: true})
		c := dialNetSMTP(t, srv)
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			t.Fatal("SMTPUTF8 not offered")
		}
		if err := sendNetSMTP(c, "zoë@latchkey.test", "anna@bücher.example", "U-label"); err != nil {
			t.Fatalf("send: %v", err)
		}
		msgs := srv.Messages()
		if len(msgs) != 1 || msgs[0].From != "zoë@latchkey.test" || msgs[0].To[0] != "anna@bücher.example" || !msgs[0].SMTPUTF8 {
			t.Fatalf("recorded %+v", msgs)
		}
	})
}
