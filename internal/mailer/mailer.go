// Package mailer sends email over SMTP through a small pool of persistent
// connections, and reports a failure in the form the delivery worker acts
// on: the server's exact reply, and whether trying again could help.
//
// It knows nothing of templates, tokens or the database. go-mail renders
// the message and sets up each connection (EHLO, STARTTLS, AUTH); the mail
// transaction itself is driven on go-mail's smtp.Client so that a refusal
// comes back as the server's reply rather than as go-mail's SendError,
// which does not expose it.
package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	mail "github.com/wneessen/go-mail"
)

// Config configures a Sender.
type Config struct {
	// URL is smtp://[user:pass@]host[:port] or smtps://[user:pass@]host[:port].
	// smtp uses STARTTLS when the server offers it; ?starttls=required
	// refuses a server that does not, ?starttls=off never tries. smtps is
	// TLS from the first byte. Default ports: 25 and 465.
	URL *url.URL
	// Pool is the number of SMTP connections kept open and reused, and so
	// the number of messages in flight at once. Default 4.
	Pool int
	// Timeout bounds one Send from dialling (if it has to) to the server's
	// final reply. Default 15s.
	Timeout time.Duration
	// HeloName is the name announced in EHLO. Default: this host's name.
	HeloName string
	// IdleTimeout closes a pooled connection that has not been used for
	// this long. Default 30s, well below the 5 minutes RFC 5321 lets a
	// server wait, so that we hang up before the server does and do not
	// reuse a connection it is about to drop.
	IdleTimeout time.Duration
}

const (
	defaultPool        = 4
	defaultTimeout     = 15 * time.Second
	defaultIdleTimeout = 30 * time.Second
	// quitTimeout bounds the QUIT that closes an idle connection politely;
	// a server that does not answer in time is simply hung up on.
	quitTimeout = 2 * time.Second
	// deadlineGrace puts the connection's own deadlines after the send's
	// context deadline; see conn.transact.
	deadlineGrace = time.Second
)

// Sender sends Messages. It is safe for concurrent use.
type Sender struct {
	cfg Config
	log zerolog.Logger

	host       string // for TLS verification and go-mail's AUTH host check
	addr       string // host:port as dialled
	smtps      bool
	tlsConfig  *tls.Config
	clientOpts []mail.Option // go-mail options shared by every connection

	// slots holds one token per connection the pool may have busy, so at
	// most Pool sends (and connections) are under way at once.
	slots chan struct{}
	// done is closed by Close; it stops the reaper and waiting senders.
	done   chan struct{}
	reaper sync.WaitGroup

	mu      sync.Mutex
	idle    []*conn // most recently used last
	closed  bool
	reaping bool // a reaper goroutine is running
	lastID  uint64
}

// New validates cfg, fills its defaults and returns a Sender. It opens no
// connection: the first Send does.
func New(cfg Config, log zerolog.Logger) (*Sender, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	t, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}

	s := &Sender{
		cfg:   cfg,
		log:   log.With().Str("component", "mailer").Logger(),
		host:  t.host,
		addr:  net.JoinHostPort(t.host, t.port),
		smtps: t.smtps,
		// go-mail's default for ServerName is the same host; the explicit
		// config is here for the minimum version.
		tlsConfig: &tls.Config{ServerName: t.host, MinVersion: tls.VersionTLS12},
		slots:     make(chan struct{}, cfg.Pool),
		done:      make(chan struct{}),
	}

	opts := []mail.Option{
		mail.WithTimeout(cfg.Timeout + deadlineGrace),
		mail.WithTLSConfig(s.tlsConfig),
		// go-mail's default policy is TLSMandatory; the URL decides.
		mail.WithTLSPolicy(t.policy),
		// The pool has its own liveness rule (replace on any error), so the
		// NOOP go-mail would send before every use is a wasted round trip.
		mail.WithoutNoop(),
	}
	if t.smtps {
		// Our dialler does the TLS handshake; WithSSL tells go-mail not to
		// try STARTTLS on top.
		opts = append(opts, mail.WithSSL())
	}
	if cfg.HeloName != "" {
		opts = append(opts, mail.WithHELO(cfg.HeloName))
	}
	if t.user != nil {
		auth, err := authType(t)
		if err != nil {
			return nil, err
		}
		pass, _ := t.user.Password()
		opts = append(opts, mail.WithSMTPAuth(auth), mail.WithUsername(t.user.Username()), mail.WithPassword(pass))
	}
	s.clientOpts = opts
	return s, nil
}

func (c *Config) fill() error {
	if c.URL == nil {
		return errors.New("mailer: URL is required")
	}
	if c.Pool == 0 {
		c.Pool = defaultPool
	}
	if c.Pool < 0 {
		return fmt.Errorf("mailer: pool size %d is negative", c.Pool)
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.Timeout < 0 {
		return fmt.Errorf("mailer: timeout %s is negative", c.Timeout)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("mailer: idle timeout %s is negative", c.IdleTimeout)
	}
	for _, r := range c.HeloName {
		if r <= ' ' || r > '~' {
			return errors.New("mailer: HELO name must be printable ASCII without spaces")
		}
	}
	return nil
}

// target is what the URL says about the server.
type target struct {
	host, port string
	smtps      bool
	policy     mail.TLSPolicy
	user       *url.Userinfo
}

// parseURL reads the server URL. Its errors never repeat the URL, which
// may carry a password.
func parseURL(u *url.URL) (target, error) {
	t := target{host: u.Hostname(), port: u.Port(), user: u.User}
	switch u.Scheme {
	case "smtp":
		t.policy = mail.TLSOpportunistic
		if t.port == "" {
			t.port = "25"
		}
	case "smtps":
		t.smtps = true
		t.policy = mail.NoTLS // TLS is already on; STARTTLS does not apply
		if t.port == "" {
			t.port = "465"
		}
	default:
		return target{}, errors.New("mailer: URL scheme must be smtp or smtps")
	}
	if t.host == "" {
		return target{}, errors.New("mailer: URL has no host")
	}
	if n, err := strconv.Atoi(t.port); err != nil || n < 1 || n > 65535 {
		return target{}, errors.New("mailer: URL port must be a number from 1 to 65535")
	}
	if (u.Path != "" && u.Path != "/") || u.Fragment != "" || u.Opaque != "" {
		return target{}, errors.New("mailer: URL must not have a path or fragment")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return target{}, errors.New("mailer: URL query does not parse")
	}
	for key, values := range q {
		// An unknown key is refused rather than ignored: a misspelt
		// "starttls=required" must not quietly mean "opportunistic".
		if key != "starttls" || len(values) != 1 {
			return target{}, fmt.Errorf("mailer: URL query parameter %q is not understood (only one starttls)", key)
		}
		if t.smtps {
			return target{}, errors.New("mailer: starttls does not apply to smtps")
		}
		switch values[0] {
		case "", "opportunistic":
			t.policy = mail.TLSOpportunistic
		case "required":
			t.policy = mail.TLSMandatory
		case "off":
			t.policy = mail.NoTLS
		default:
			return target{}, errors.New("mailer: starttls must be opportunistic, required or off")
		}
	}
	return t, nil
}

// authType picks go-mail's PLAIN variant. Credentials may travel in clear
// only to a loopback server (a local relay or test sink): anywhere else
// go-mail's SMTPAuthPlain refuses to send them unless TLS is up, so a
// stripped STARTTLS cannot leak them, and a URL that rules TLS out
// altogether is refused here.
func authType(t target) (mail.SMTPAuthType, error) {
	switch {
	case isLoopback(t.host):
		// NoEnc because go-mail trusts only the literal names localhost,
		// 127.0.0.1 and ::1, not the rest of 127.0.0.0/8.
		return mail.SMTPAuthPlainNoEnc, nil
	case t.smtps || t.policy != mail.NoTLS:
		return mail.SMTPAuthPlain, nil
	default:
		return "", errors.New("mailer: URL has credentials but starttls=off to a non-loopback host would send them unencrypted")
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Send delivers m to its recipient, or returns why not. Use Temporary on
// the error to decide between retrying and giving up; errors.As with
// *SMTPError gives the server's reply. An invalid m is refused before any
// connection is made.
//
// ctx bounds the wait for a free connection and the send itself; the
// send is further bounded by Config.Timeout.
func (s *Sender) Send(ctx context.Context, m Message) error {
	p, err := m.prepare()
	if err != nil {
		return err
	}
	// Checked first because select in acquire picks at random between a
	// free slot and a done ctx.
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("mailer: send to %s: %w", p.domain, err)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("mailer: send to %s: wait for a connection: %w", p.domain, err)
	}
	defer func() { <-s.slots }()

	// The timeout starts once a slot is ours: waiting behind other sends
	// is the caller's business, not a sign that the server is slow.
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.Timeout,
		fmt.Errorf("mailer: no reply within %s: %w", s.cfg.Timeout, context.DeadlineExceeded))
	defer cancel()

	for retried := false; ; retried = true {
		o, err := s.attempt(ctx, p, retried)
		if err == nil {
			s.log.Debug().Str("recipient_domain", p.domain).Uint64("conn", o.conn).Bool("reused", o.reused).
				Str("smtp_reply", o.reply).Msg("mail sent")
			return nil
		}
		// A pooled connection the server has since dropped fails at the
		// first command, before any of the message was sent, so one more
		// try cannot duplicate anything. It dials afresh: when the server
		// restarted, the other idle connections are just as dead.
		if !retried && o.reused && o.stage == stageMailFrom && ctx.Err() == nil && staleConn(err) {
			s.log.Debug().Err(err).Uint64("conn", o.conn).Msg("pooled connection went stale, redialling")
			continue
		}
		return s.failed(ctx, p, o, err)
	}
}

// acquire takes a pool slot, waiting for one if all are busy.
func (s *Sender) acquire(ctx context.Context) error {
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// failed wraps and logs a send that did not succeed.
func (s *Sender) failed(ctx context.Context, p *prepared, o outcome, err error) error {
	err = asSMTPError(err)
	if ctx.Err() != nil {
		if _, isReply := errors.AsType[*SMTPError](err); !isReply {
			// The connection was cut because ctx ended; "use of closed
			// network connection" would only hide that.
			if errors.Is(err, net.ErrClosed) {
				err = context.Cause(ctx)
			} else {
				err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
			}
		}
	}
	err = fmt.Errorf("mailer: send to %s: %s: %w", p.domain, o.stage, err)

	// A cancelled send is the caller stopping, not a failure to report.
	if !errors.Is(err, context.Canceled) {
		ev := s.log.Info().Str("recipient_domain", p.domain).Str("stage", string(o.stage)).
			Uint64("conn", o.conn).Bool("reused", o.reused).Bool("temporary", Temporary(err))
		if se, ok := errors.AsType[*SMTPError](err); ok {
			ev = ev.Int("smtp_code", se.Code).Str("smtp_enhanced_code", se.EnhancedCode).Str("smtp_reply", se.Message)
		}
		ev.Err(err).Msg("mail not sent")
	}
	return err
}

// staleConn reports whether a failure on a reused connection looks like
// the server having closed it: no reply at all, or 421 (closing channel).
func staleConn(err error) bool {
	if tpErr, ok := errors.AsType[*textproto.Error](err); ok {
		return tpErr.Code == 421
	}
	return true
}

// Close closes the pooled connections (with QUIT, briefly waited for) and
// stops the idle reaper. Sends still under way finish and then close their
// connections. Send after Close returns ErrClosed. The error is always nil:
// a server that does not answer QUIT is no failure of ours.
func (s *Sender) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()

	close(s.done)
	s.reaper.Wait()
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(c.quit)
	}
	wg.Wait()
	return nil
}
