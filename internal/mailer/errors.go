package mailer

import (
	"errors"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidMessage marks a Message refused before any network I/O: an
// address that does not parse, a header that would smuggle in another
// header. Sending it again can never succeed, so Temporary reports false.
var ErrInvalidMessage = errors.New("invalid message")

// ErrNeedsSMTPUTF8 marks a message that has an address with a non-ASCII
// local part (用户@example.com) for a server that does not offer SMTPUTF8:
// only that extension can carry such a mailbox's name (RFC 6531), and an
// A-label stands in for a domain only. Nothing was sent. Temporary reports
// false: the server would have to change first.
var ErrNeedsSMTPUTF8 = errors.New("the SMTP server does not offer SMTPUTF8, which an address with a non-ASCII local part needs (RFC 6531)")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("mailer: sender closed")

// SMTPError is a reply from the SMTP server that refused a command, kept
// whole so the caller can store exactly what the server said.
type SMTPError struct {
	// Code is the three-digit reply code: 4xx transient, 5xx permanent.
	Code int
	// EnhancedCode is the RFC 3463 status such as "5.1.1", or "" when the
	// server sent none.
	EnhancedCode string
	// Message is the reply text without the codes; the lines of a
	// multi-line reply are joined by spaces.
	Message string

	// cause is go-mail's error, kept so errors.As can still reach the
	// *textproto.Error underneath.
	cause error
}

func (e *SMTPError) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(strconv.Itoa(e.Code))
	if e.EnhancedCode != "" {
		b.WriteByte(' ')
		b.WriteString(e.EnhancedCode)
	}
	if e.Message != "" {
		b.WriteByte(' ')
		b.WriteString(e.Message)
	}
	return b.String()
}

func (e *SMTPError) Unwrap() error { return e.cause }

// Temporary reports whether the server may accept the same mail later. Only
// a 5xx is final: a 4xx says so, and a code outside both classes means the
// exchange went wrong rather than that the mail was judged.
func (e *SMTPError) Temporary() bool { return e.Code/100 != 5 }

// Temporary reports whether sending the same message again could succeed:
// true for 4xx replies, timeouts, refused or dropped connections (a server
// closing without a reply included) and cancelled contexts; false for 5xx
// replies, for messages refused as invalid, and for ErrNeedsSMTPUTF8. An error it cannot place
// counts as temporary, because a retry is bounded by the caller's attempt
// limit and ends as a visible dead letter, whereas calling it permanent
// would give up on a mail that might have gone through.
//
// A temporary failure after the message data was sent (a dropped
// connection, a timeout waiting for the final reply) may still have been
// delivered; the caller's stable Message-ID is what lets a duplicate be
// recognised.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, ErrInvalidMessage) || errors.Is(err, ErrNeedsSMTPUTF8) {
		return false
	}
	if se, ok := errors.AsType[*SMTPError](err); ok {
		return se.Temporary()
	}
	return true
}

// asSMTPError turns go-mail's error into an *SMTPError when the server
// replied; other errors (network, TLS, go-mail's own checks) pass through.
//
// go-mail's smtp package returns the *textproto.Error of a refused command
// as is, or wrapped with %w during connection setup, so errors.As finds it.
// (Its higher-level SendError would not: it has no Unwrap, and its reply
// text can only be had by parsing Error(). That is why Send drives the
// transaction on the smtp.Client itself.)
func asSMTPError(err error) error {
	tpErr, ok := errors.AsType[*textproto.Error](err)
	if !ok {
		return err
	}
	se := fromReply(tpErr.Code, tpErr.Msg)
	se.cause = err
	if err == error(tpErr) {
		return se
	}
	// A reply nested in go-mail's own wording ("SMTP AUTH failed: …"):
	// keep that wording, it says which step of the setup was refused.
	return &wrappedReply{reply: se, text: err.Error()}
}

// wrappedReply prints go-mail's description of a failed connection setup
// while letting errors.As find the reply inside it.
type wrappedReply struct {
	reply *SMTPError
	text  string
}

func (w *wrappedReply) Error() string { return w.text }
func (w *wrappedReply) Unwrap() error { return w.reply }

// fromReply splits a reply's text into the enhanced status code and the
// message. textproto has already removed the reply code from every line,
// but a server that uses enhanced codes repeats one on each line.
func fromReply(code int, msg string) *SMTPError {
	se := &SMTPError{Code: code}
	lines := strings.Split(msg, "\n")
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if enh, rest, ok := cutEnhancedCode(line, code); ok {
			if se.EnhancedCode == "" {
				se.EnhancedCode = enh
			}
			line = rest
		}
		lines[i] = line
	}
	// A reply of codes only leaves empty lines behind.
	lines = slices.DeleteFunc(lines, func(l string) bool { return l == "" })
	se.Message = strings.Join(lines, " ")
	return se
}

// cutEnhancedCode recognises a leading RFC 3463 status ("4.7.1 text") whose
// class matches the reply code, so text that merely starts with a number
// is not mistaken for one.
func cutEnhancedCode(line string, code int) (enh, rest string, ok bool) {
	head, rest, _ := strings.Cut(line, " ")
	parts := strings.Split(head, ".")
	if len(parts) != 3 || parts[0] != strconv.Itoa(code/100) {
		return "", line, false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return "", line, false
		}
		if _, err := strconv.Atoi(p); err != nil || strings.ContainsAny(p, "+-") {
			return "", line, false
		}
	}
	return head, strings.TrimSpace(rest), true
}
