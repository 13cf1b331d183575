package smtptest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// shuttingDown answers a transaction cut short by Close; the client rarely
// sees it because its connection is being closed too. A function, not a
// shared value, so no caller can alter what another one sends.
func shuttingDown() *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         421,
		EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message:      "smtptest: server shutting down",
	}
}

// session is one SMTP connection's state after EHLO. go-smtp calls its
// methods from that connection's goroutine only, so it needs no lock.
type session struct {
	s      *Server
	conn   net.Conn
	connID uint64

	authUser string
	from     string
	smtputf8 bool
	to       []string
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	sess := &session{s: s, conn: c.Conn()}
	// Our listener wrapped every conn, so this always holds; the check keeps
	// a future go-smtp that wraps conns itself from panicking here.
	if tc, ok := c.Conn().(*trackedConn); ok {
		sess.connID = tc.id
	}
	return sess, nil
}

func (ss *session) AuthMechanisms() []string {
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, username, password string) error {
			return ss.authenticate(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{authenticate: ss.authenticate}, nil
	default:
		return nil, smtp.ErrAuthUnknownMechanism
	}
}

func (ss *session) authenticate(username, password string) error {
	if hook := ss.s.cfg.OnAuth; hook != nil {
		if r := hook(ss.s.stopCtx, username, password); r != nil && r.isFailure() {
			return r.smtpError()
		}
	}
	ss.authUser = username
	ss.s.count(func(st *Stats) { st.Auths++ })
	return nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	utf8 := opts != nil && opts.UTF8
	if !utf8 && !isASCII(from) {
		ss.s.count(func(st *Stats) { st.MailRejected++ })
		return nonASCIIAddress()
	}
	ss.from = from
	ss.smtputf8 = utf8
	ss.to = nil
	return nil
}

// nonASCIIAddress is RFC 6531 section 3.7.4.1's reply to an address that
// needs SMTPUTF8 in a transaction that did not ask for it.
func nonASCIIAddress() *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         553,
		EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message:      "smtptest: non-ASCII address without SMTPUTF8",
	}
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !ss.smtputf8 && !isASCII(to) {
		ss.s.count(func(st *Stats) { st.RcptRejected++ })
		return nonASCIIAddress()
	}
	if hook := ss.s.cfg.OnRcpt; hook != nil {
		if r := hook(ss.s.stopCtx, ss.from, to); r != nil && r.isFailure() {
			ss.s.count(func(st *Stats) { st.RcptRejected++ })
			return r.smtpError()
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		// A size-limit refusal is a reply the client sees; a broken
		// connection is not a rejection, just an aborted transaction.
		// go-smtp only recognises an unwrapped *SMTPError as a reply to send.
		if smtpErr, ok := errors.AsType[*smtp.SMTPError](err); ok {
			ss.s.count(func(st *Stats) { st.Rejected++ })
			return smtpErr
		}
		return fmt.Errorf("smtptest: read message data: %w", err)
	}
	msg := Message{
		From:       ss.from,
		To:         slices.Clone(ss.to),
		SMTPUTF8:   ss.smtputf8,
		Data:       data,
		ReceivedAt: ss.s.cfg.Now(),
		ConnID:     ss.connID,
		AuthUser:   ss.authUser,
	}

	f, scripted, delay := ss.s.takeFault()
	var reply *Reply
	switch {
	case scripted && f.drop:
	case scripted:
		reply = &f.reply
	case ss.s.cfg.OnData != nil:
		reply = ss.s.cfg.OnData(ss.s.stopCtx, msg.clone())
	}

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ss.s.stopCtx.Done():
			t.Stop()
			return shuttingDown()
		}
	}

	// A hook or delay that Close cut short must not turn into an accept:
	// the server is going away, and the client gets no 250 from it.
	if ss.s.stopCtx.Err() != nil {
		return shuttingDown()
	}

	switch {
	case scripted && f.drop:
		// Closing our side before writing the reply is exactly what a crash
		// after receipt looks like to the client: data sent, no answer.
		ss.s.count(func(st *Stats) { st.Dropped++ })
		_ = ss.conn.Close()
		return shuttingDown()
	case reply != nil && reply.isFailure():
		ss.s.count(func(st *Stats) { st.Rejected++ })
		return reply.smtpError()
	}

	// Recorded before go-smtp writes 250, so by the time the client's send
	// returns, Messages and Count already include it.
	ss.s.record(msg)
	if reply != nil && reply.Code/100 == 2 {
		// A 2xx "error" is how go-smtp lets a backend choose the OK text.
		return reply.smtpError()
	}
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.smtputf8 = false
	ss.to = nil
}

func (ss *session) Logout() error { return nil }

// loginServer implements the obsolete but widespread AUTH LOGIN, which
// go-sasl only provides as a client: username and password are each sent
// in answer to a prompt.
type loginServer struct {
	authenticate func(username, password string) error
	username     string
	state        int
}

const (
	loginWantUsername = iota
	loginWantPassword
	loginDone
)

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case loginWantUsername:
		// An initial response ("AUTH LOGIN dXNlcg==") carries the username.
		if response == nil {
			return []byte("Username:"), false, nil
		}
		l.username = string(response)
		l.state = loginWantPassword
		return []byte("Password:"), false, nil
	case loginWantPassword:
		l.state = loginDone
		return nil, true, l.authenticate(l.username, string(response))
	default:
		return nil, false, errors.New("smtptest: unexpected AUTH LOGIN response")
	}
}
