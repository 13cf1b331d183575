// Package smtptest runs a real SMTP server on loopback that records what it
// receives and can be told to fail. Tests and the load harness point the mail
// sender at it instead of a mock, so the sender's SMTP client, connection
// handling and retry decisions are exercised over real TCP connections.
package smtptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrClosed is returned by WaitForCount once the server is closed, because no
// further message can arrive, and by Start after Close.
var ErrClosed = errors.New("smtptest: server closed")

// Config configures a Server. The zero value is usable.
type Config struct {
	// Addr is the host:port to listen on. Default "127.0.0.1:0": loopback
	// only, and a free port so parallel tests never collide.
	Addr string
	// Domain is announced in the greeting. Default "localhost".
	Domain string
	// MaxMessageBytes makes DATA larger than this fail with 552 5.3.4.
	// Zero means unlimited.
	MaxMessageBytes int64
	// SMTPUTF8 advertises the SMTPUTF8 extension (RFC 6531). Either way, a
	// MAIL FROM or RCPT TO address holding a non-ASCII character is refused
	// with 553 5.6.7 unless the transaction's MAIL FROM asked for SMTPUTF8,
	// as a relay without the extension refuses it; so a client that fails
	// to send A-labels (or to ask for SMTPUTF8) is caught. Default false.
	SMTPUTF8 bool

	// OnRcpt, if set, decides every RCPT TO. Returning a Reply with a 4xx or
	// 5xx code rejects that recipient only; nil accepts it. This is where
	// per-recipient failures (unknown mailbox, greylisting) are scripted.
	OnRcpt func(ctx context.Context, from, to string) *Reply
	// OnData, if set, decides every end-of-data that no FailNext/DropNext
	// fault claimed. nil accepts the message; a 4xx or 5xx Reply rejects
	// it; a 2xx Reply accepts it with that reply text (other codes accept
	// with the default 250). ctx is cancelled by
	// Close, so a hook that blocks must watch it or Close will hang.
	OnData func(ctx context.Context, m Message) *Reply
	// OnAuth, if set, decides AUTH attempts; nil (the default) accepts any
	// credentials, which is what tests of the sending side want.
	OnAuth func(ctx context.Context, username, password string) *Reply

	// Logger receives go-smtp's internal errors (a client resetting its
	// connection, for instance). Default: discarded.
	Logger *slog.Logger
	// Debug, if set, receives the raw protocol trace of every connection.
	// It is written from several goroutines, so it must be safe for that.
	Debug io.Writer
	// Now stamps Message.ReceivedAt. Default time.Now.
	Now func() time.Time
}

// Reply is an SMTP reply the server gives instead of its default.
type Reply struct {
	// Code is the three-digit reply code: 4xx transient, 5xx permanent.
	Code int
	// EnhancedCode is the RFC 3463 status, e.g. {4, 7, 1}. The zero value
	// lets the server send X.0.0 derived from Code.
	EnhancedCode [3]int
	// Message is the reply text.
	Message string
}

// Error makes a Reply usable as the error a hook decided on.
func (r Reply) Error() string {
	return fmt.Sprintf("smtp reply %d %d.%d.%d %s",
		r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}

// Temporary reports whether the reply is a 4xx, which a client should retry.
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

func (r Reply) isFailure() bool { return r.Code >= 400 && r.Code <= 599 }

// smtpError converts to go-smtp's type, which it writes to the wire verbatim.
func (r Reply) smtpError() *smtp.SMTPError {
	msg := r.Message
	if msg == "" {
		switch {
		case r.Code >= 500:
			msg = "smtptest: injected permanent failure"
		case r.Code >= 400:
			msg = "smtptest: injected transient failure"
		default:
			msg = "OK"
		}
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.EnhancedCode), Message: msg}
}

// Stats are the server's counters since Start or the last Reset.
type Stats struct {
	// Connections is the number of TCP connections accepted. Sending n
	// messages with Connections == 1 proves the client reused its connection.
	Connections uint64
	// ActiveConnections is the number of connections open right now.
	ActiveConnections int
	// Accepted counts messages answered with 2xx and recorded.
	Accepted uint64
	// Rejected counts end-of-data answered with 4xx or 5xx.
	Rejected uint64
	// Dropped counts messages fully received whose connection was then cut
	// before any reply (DropNext): the client cannot know they arrived.
	Dropped uint64
	// RcptRejected counts RCPT TO commands refused by OnRcpt, or for a
	// non-ASCII address without SMTPUTF8.
	RcptRejected uint64
	// MailRejected counts MAIL FROM commands refused for a non-ASCII
	// address without SMTPUTF8.
	MailRejected uint64
	// Auths counts successful AUTH commands.
	Auths uint64
}

// fault is one scripted end-of-data outcome, consumed in FIFO order so that
// FailNext(1, …) followed by DropNext(1) happens in exactly that order.
type fault struct {
	reply     Reply
	drop      bool
	remaining int
}

// Server is a running (or ready to run) SMTP server. All methods are safe for
// concurrent use.
type Server struct {
	cfg    Config
	logger *slog.Logger
	smtp   *smtp.Server

	// stopCtx is cancelled by Close. It lives on the struct because it is
	// the server's lifetime, handed to hooks and used to cut delays short,
	// not a per-call context.
	stopCtx context.Context
	stop    context.CancelFunc

	serveDone chan struct{}

	mu        sync.Mutex
	started   bool
	closed    bool
	ln        *listener
	conns     map[*trackedConn]struct{}
	lastID    uint64
	messages  []Message
	stats     Stats
	faults    []fault
	delay     time.Duration
	changedCh chan struct{} // closed and replaced whenever messages change
}

// New validates cfg, fills defaults and returns a server that is not yet
// listening; call Start.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("smtptest: listen address %q: %w", cfg.Addr, err)
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.MaxMessageBytes < 0 {
		return nil, fmt.Errorf("smtptest: MaxMessageBytes %d is negative", cfg.MaxMessageBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	s := &Server{
		cfg:       cfg,
		logger:    cfg.Logger,
		serveDone: make(chan struct{}),
		conns:     make(map[*trackedConn]struct{}),
		changedCh: make(chan struct{}),
	}
	s.stopCtx, s.stop = context.WithCancel(context.Background())

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Addr = cfg.Addr
	srv.Domain = cfg.Domain
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.EnableSMTPUTF8 = cfg.SMTPUTF8
	// Plain text only: the senders under test are configured without TLS
	// against this server, and AUTH must still work so credentials are seen.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogPrinter{logger: cfg.Logger}
	if cfg.Debug != nil {
		srv.Debug = cfg.Debug
	}
	s.smtp = srv
	return s, nil
}

// NewStarted is New plus Start for tests: it fails tb on error and closes the
// server in tb.Cleanup.
func NewStarted(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("smtptest: %v", err)
	}
	if err := s.Start(tb.Context()); err != nil {
		tb.Fatalf("smtptest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("smtptest: %v", err)
		}
	})
	return s
}

// Start listens on Config.Addr and serves in a goroutine. ctx bounds only
// the listen call; the server runs until Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("smtptest: start: %w", ErrClosed)
	}
	if s.started {
		return errors.New("smtptest: start: already started")
	}

	var lc net.ListenConfig
	raw, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtptest: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = &listener{Listener: raw, s: s}
	s.started = true

	go func() {
		defer close(s.serveDone)
		err := s.smtp.Serve(s.ln)
		// Close shuts the listener before go-smtp learns it is closing,
		// so an error here is expected then and only worth logging otherwise.
		if err != nil && !s.isClosed() {
			s.logger.Error("smtptest: serve stopped", "error", err)
		}
	}()
	return nil
}

// Addr is the host:port the server listens on, "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Host is the listening IP, for clients that take host and port separately.
func (s *Server) Host() string {
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return ""
	}
	return host
}

// Port is the listening port, 0 before Start.
func (s *Server) Port() int {
	_, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return 0
	}
	return n
}

// URL is the server as an smtp:// URL, e.g. "smtp://127.0.0.1:2525".
func (s *Server) URL() string {
	addr := s.Addr()
	if addr == "" {
		return ""
	}
	return (&url.URL{Scheme: "smtp", Host: addr}).String()
}

// Close stops accepting, cuts every open connection, and returns only once
// every goroutine the server started has exited. It is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	ln := s.ln
	s.notifyLocked()
	s.mu.Unlock()

	// Wake hooks and delays before waiting for the connections they hold.
	s.stop()
	if !started {
		return nil
	}

	// Order matters. go-smtp's Shutdown waits on a WaitGroup that its accept
	// loop adds to, so the loop must have returned before Shutdown waits:
	// closing our listener (whose Accept refuses conns once closed is set)
	// ends the loop, and only then are the connections cut and waited for.
	lnErr := ln.Close()
	<-s.serveDone

	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.Close() // the handler sees a closed conn and returns
	}

	// Everything is closed, so this only waits for the handlers to return.
	if err := s.smtp.Shutdown(context.Background()); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		return fmt.Errorf("smtptest: shut down: %w", err)
	}
	if lnErr != nil && !errors.Is(lnErr, net.ErrClosed) {
		return fmt.Errorf("smtptest: close listener: %w", lnErr)
	}
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Messages returns a copy of every accepted message, in arrival order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messagesLocked()
}

func (s *Server) messagesLocked() []Message {
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = m.clone()
	}
	return out
}

// Count is the number of accepted messages.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.messages)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ActiveConnections = len(s.conns)
	return st
}

// Reset forgets recorded messages, zeroes the counters (except
// ActiveConnections, which describes the present), and clears pending
// faults and the delay. Connection IDs keep increasing so they stay unique.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = nil
	s.stats = Stats{}
	s.faults = nil
	s.delay = 0
	s.notifyLocked()
}

// WaitForCount blocks until at least n messages have been accepted and
// returns them, or returns what has arrived so far with an error when ctx
// ends or the server closes.
func (s *Server) WaitForCount(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.messages) >= n {
			out := s.messagesLocked()
			s.mu.Unlock()
			return out, nil
		}
		if s.closed {
			out := s.messagesLocked()
			s.mu.Unlock()
			return out, fmt.Errorf("smtptest: wait for %d messages, have %d: %w", n, len(out), ErrClosed)
		}
		changed := s.changedCh
		s.mu.Unlock()

		select {
		case <-changed:
		case <-ctx.Done():
			out := s.Messages()
			return out, fmt.Errorf("smtptest: wait for %d messages, have %d: %w", n, len(out), ctx.Err())
		}
	}
}

// FailNext makes the next n end-of-data replies the given 4xx or 5xx reply
// instead of accepting. The message is not recorded. Faults queue up behind
// earlier FailNext/DropNext calls and are consumed in order, one per message.
func (s *Server) FailNext(n int, reply Reply) {
	if n < 0 {
		panic(fmt.Sprintf("smtptest: FailNext with negative count %d", n))
	}
	if !reply.isFailure() {
		panic(fmt.Sprintf("smtptest: FailNext needs a 4xx or 5xx code, got %d", reply.Code))
	}
	s.addFault(fault{reply: reply, remaining: n})
}

// DropNext makes the server close the connection after receiving each of
// the next n messages in full, without replying: a crash or network failure
// after delivery. The client sees a broken connection; the message counts as
// Dropped, not Accepted, and is not recorded. It queues like FailNext.
func (s *Server) DropNext(n int) {
	if n < 0 {
		panic(fmt.Sprintf("smtptest: DropNext with negative count %d", n))
	}
	s.addFault(fault{drop: true, remaining: n})
}

func (s *Server) addFault(f fault) {
	if f.remaining == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// SetDelay makes the server wait d after receiving a message before it
// replies to end-of-data (whatever the reply), to exercise client timeouts.
// Zero removes the delay. Close cuts a pending delay short.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = max(d, 0)
}

// takeFault pops one scripted outcome, deciding it at arrival time so that
// concurrent connections consume the queue in the order their data arrives.
func (s *Server) takeFault() (f fault, ok bool, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delay = s.delay
	if len(s.faults) == 0 {
		return fault{}, false, delay
	}
	head := &s.faults[0]
	head.remaining--
	f = *head
	if head.remaining == 0 {
		s.faults = slices.Delete(s.faults, 0, 1)
	}
	return f, true, delay
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
	s.stats.Accepted++
	s.notifyLocked()
}

func (s *Server) count(fn func(st *Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.stats)
}

// notifyLocked wakes every WaitForCount. A closed channel is a broadcast
// that, unlike sync.Cond, can be selected on together with ctx.Done().
func (s *Server) notifyLocked() {
	close(s.changedCh)
	s.changedCh = make(chan struct{})
}

// track registers an accepted connection, giving it the ID its messages
// carry. It refuses connections once Close has begun, so that go-smtp's
// accept loop starts no handler Close would not wait for.
func (s *Server) track(c net.Conn) (*trackedConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	s.lastID++
	s.stats.Connections++
	tc := &trackedConn{Conn: c, id: s.lastID, s: s}
	s.conns[tc] = struct{}{}
	return tc, true
}

func (s *Server) untrack(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// listener numbers and tracks every connection go-smtp accepts.
type listener struct {
	net.Listener
	s *Server

	closeOnce sync.Once
	closeErr  error
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := l.s.track(c)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("smtptest: accept: %w", net.ErrClosed)
	}
	return tc, nil
}

// Close is idempotent because both Close and go-smtp's Shutdown call it.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

// trackedConn carries the connection ID and leaves the open set on Close.
type trackedConn struct {
	net.Conn
	id uint64
	s  *Server

	closeOnce sync.Once
}

func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() { c.s.untrack(c) })
	return c.Conn.Close()
}

// slogPrinter adapts go-smtp's Printf-style logger to slog.
type slogPrinter struct{ logger *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.logger.Info("smtptest: go-smtp: " + fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) {
	p.logger.Info("smtptest: go-smtp: " + fmt.Sprint(v...))
}
