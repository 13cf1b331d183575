package mailer

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// stage names the step of a send that failed, for errors and logs.
type stage string

const (
	stageConnect stage = "connect"
	// stageCapabilities is the choice of a rendering for what the server
	// offers; its failure sends nothing, and leaves the connection usable.
	stageCapabilities stage = "capabilities"
	stageMailFrom     stage = "MAIL FROM"
	stageRcptTo       stage = "RCPT TO"
	stageData         stage = "DATA"
	stageContent      stage = "message data"
	stageEndOfData    stage = "end of data"
)

// conn is one SMTP connection of the pool.
type conn struct {
	id     uint64
	client *smtp.Client
	// lastUsed is when the connection went idle; guarded by Sender.mu
	// while it sits in the idle list.
	lastUsed time.Time

	// mu guards raw and aborted, which abort touches from another
	// goroutine when a send's context ends.
	mu      sync.Mutex
	raw     net.Conn // the TCP connection, under any TLS
	aborted bool
}

// outcome describes one attempt, failed or not.
type outcome struct {
	conn   uint64
	reused bool
	stage  stage
	reply  string // the server's reply to the data, on success
}

// attempt sends p on an idle connection, or on a new one if none is idle
// or fresh is set. A connection that saw any error is closed rather than
// returned to the pool: after a refusal or a timeout its session state is
// not worth reasoning about, and a new connection is cheap at our rates.
// The exception is a message the server cannot take (ErrNeedsSMTPUTF8),
// refused before any command was sent.
func (s *Sender) attempt(ctx context.Context, p *prepared, fresh bool) (outcome, error) {
	var c *conn
	if !fresh {
		c = s.takeIdle()
	}
	o := outcome{reused: c != nil}
	if c == nil {
		c = s.newConn()
	}
	o.conn = c.id

	// Cutting the TCP connection is the only way to interrupt go-mail
	// mid-command: nothing after its dial takes a context.
	stop := context.AfterFunc(ctx, c.abort)
	var err error
	if !o.reused {
		o.stage = stageConnect
		err = s.dial(ctx, c)
	}
	var f *form
	if err == nil {
		o.stage = stageCapabilities
		// go-mail's Mail asks for SMTPUTF8 whenever the server offers it,
		// so the message as given may then go out as it is.
		smtputf8, _ := c.client.Extension("SMTPUTF8")
		f, err = p.formFor(smtputf8)
	}
	if err == nil {
		o.stage, o.reply, err = c.transact(ctx, f.from, f.to, f.data)
	}
	cut := !stop()
	if o.stage == stageCapabilities && err != nil && !cut {
		s.putIdle(c)
		return o, err
	}
	if err != nil || cut {
		// Even a success whose context ended at the last moment leaves a
		// connection that abort may have closed under it.
		c.abort()
		return o, err
	}
	s.putIdle(c)
	return o, nil
}

func (s *Sender) newConn() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID++
	return &conn{id: s.lastID}
}

// dial connects c and has go-mail do the greeting, EHLO, STARTTLS and AUTH.
func (s *Sender) dial(ctx context.Context, c *conn) error {
	// A go-mail Client per connection, because its dialler is the only
	// hook through which we learn the net.Conn that abort must cut.
	opts := append(slices.Clip(s.clientOpts), mail.WithDialContextFunc(
		func(ctx context.Context, _, _ string) (net.Conn, error) { return s.dialTCP(ctx, c) }))
	mc, err := mail.NewClient(s.host, opts...)
	if err != nil {
		return fmt.Errorf("configure go-mail: %w", err)
	}
	client, err := mc.DialToSMTPClientWithContext(ctx)
	if err != nil {
		// go-mail returns without closing the connection when the
		// greeting, EHLO, STARTTLS or AUTH fails.
		c.abort()
		return err
	}
	c.client = client
	s.log.Debug().Uint64("conn", c.id).Str("server", s.addr).Msg("connected")
	return nil
}

// dialTCP opens the connection go-mail talks over; ctx is go-mail's, which
// derives from the send's.
func (s *Sender) dialTCP(ctx context.Context, c *conn) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if !c.attach(raw) {
		return nil, fmt.Errorf("dial %s: %w", s.addr, context.Cause(ctx))
	}
	if !s.smtps {
		return raw, nil
	}
	tc := tls.Client(raw, s.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", s.addr, err)
	}
	// Handing go-mail the *tls.Conn itself matters: it checks the type to
	// know that the session is encrypted before it will send credentials.
	return tc, nil
}

// transact runs one mail transaction. The connection's deadline is reset
// first: go-mail set it when dialling, and on a reused connection it has
// long passed. It is a backstop only, deadlineGrace after ctx's: the
// AfterFunc on ctx is what interrupts a send, so that the error reliably
// says the context ended instead of racing it with an i/o timeout.
func (c *conn) transact(ctx context.Context, from, to string, data []byte) (stage, string, error) {
	deadline, _ := ctx.Deadline()
	if err := c.rawConn().SetDeadline(deadline.Add(deadlineGrace)); err != nil {
		return stageMailFrom, "", err
	}
	if err := c.client.Mail(from); err != nil {
		return stageMailFrom, "", err
	}
	if err := c.client.Rcpt(to); err != nil {
		return stageRcptTo, "", err
	}
	w, err := c.client.Data()
	if err != nil {
		return stageData, "", err
	}
	if _, err := bytes.NewReader(data).WriteTo(w); err != nil {
		return stageContent, "", err
	}
	if err := w.Close(); err != nil {
		return stageEndOfData, "", err
	}
	var reply string
	if dc, ok := w.(*smtp.DataCloser); ok {
		reply = dc.ServerResponse()
	}
	return stageEndOfData, reply, nil
}

// attach records the dialled connection; false means the send was already
// abandoned, and the connection has been closed.
func (c *conn) attach(raw net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		_ = raw.Close()
		return false
	}
	c.raw = raw
	return true
}

func (c *conn) rawConn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw
}

// abort hangs up at once. It may run concurrently with a command blocked
// on the connection, which then fails; and before the dial has produced a
// connection, in which case attach closes it on arrival.
func (c *conn) abort() {
	c.mu.Lock()
	c.aborted = true
	raw := c.raw
	c.mu.Unlock()
	if raw != nil {
		_ = raw.Close()
	}
}

// quit ends an idle connection politely, within quitTimeout.
func (c *conn) quit() {
	if raw := c.rawConn(); raw != nil {
		_ = raw.SetDeadline(time.Now().Add(quitTimeout))
	}
	_ = c.client.Quit() // a server that already hung up is no reason to care
	c.abort()
}

func (s *Sender) takeIdle() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.idle)
	if n == 0 {
		return nil
	}
	// The most recently used first: under light load the same connection
	// serves everything and the others age out.
	c := s.idle[n-1]
	s.idle[n-1] = nil
	s.idle = s.idle[:n-1]
	return c
}

func (s *Sender) putIdle(c *conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.quit()
		return
	}
	c.lastUsed = time.Now()
	s.idle = append(s.idle, c)
	if !s.reaping {
		// Started only while something is idle, so a Sender that is not
		// sending holds no goroutine.
		s.reaping = true
		s.reaper.Add(1)
		go s.reap()
	}
	s.mu.Unlock()
}

// reap closes connections idle for IdleTimeout, and exits once none is
// left idle or the Sender closes.
func (s *Sender) reap() {
	defer s.reaper.Done()
	t := time.NewTimer(s.cfg.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		expired, next, more := s.expire(time.Now())
		for _, c := range expired {
			s.log.Debug().Uint64("conn", c.id).Msg("closing idle connection")
			c.quit()
		}
		if !more {
			return
		}
		t.Reset(next)
	}
}

// expire takes the connections idle for IdleTimeout out of the pool and
// says how long until the next one is due; more is false when the idle
// list is empty and the reaper should stop.
func (s *Sender) expire(now time.Time) (expired []*conn, next time.Duration, more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next = s.cfg.IdleTimeout
	keep := s.idle[:0]
	for _, c := range s.idle {
		if left := s.cfg.IdleTimeout - now.Sub(c.lastUsed); left > 0 {
			keep = append(keep, c)
			next = min(next, left)
		} else {
			expired = append(expired, c)
		}
	}
	clear(s.idle[len(keep):])
	s.idle = keep
	if len(s.idle) == 0 {
		s.reaping = false
		return expired, 0, false
	}
	return expired, next, true
}
