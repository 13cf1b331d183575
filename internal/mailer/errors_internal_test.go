package mailer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"testing"
)

func TestAsSMTPErrorSplitsTheReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  *textproto.Error
		want SMTPError
	}{
		{"enhanced", &textproto.Error{Code: 550, Msg: "5.1.1 mailbox unavailable"},
			SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "mailbox unavailable"}},
		{"plain", &textproto.Error{Code: 451, Msg: "greylisted, come back later"},
			SMTPError{Code: 451, Message: "greylisted, come back later"}},
		{"multi-line", &textproto.Error{Code: 550, Msg: "5.7.1 rejected by policy\n5.7.1 see https://example.net/why"},
			SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "rejected by policy see https://example.net/why"}},
		{"class mismatch is text", &textproto.Error{Code: 451, Msg: "5.1.1 odd server"},
			SMTPError{Code: 451, Message: "5.1.1 odd server"}},
		{"version-like text", &textproto.Error{Code: 554, Msg: "5.10 is not a status"},
			SMTPError{Code: 554, Message: "5.10 is not a status"}},
		{"code only", &textproto.Error{Code: 421, Msg: "4.3.2"},
			SMTPError{Code: 421, EnhancedCode: "4.3.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			se, ok := errors.AsType[*SMTPError](asSMTPError(tc.err))
			if !ok {
				t.Fatal("no *SMTPError")
			}
			if se.Code != tc.want.Code || se.EnhancedCode != tc.want.EnhancedCode || se.Message != tc.want.Message {
				t.Errorf("got %+v, want %+v", *se, tc.want)
			}
			if tp, ok := errors.AsType[*textproto.Error](se); !ok || tp != tc.err {
				t.Error("the *textproto.Error is no longer reachable")
			}
		})
	}
}

func TestSMTPErrorText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		e    SMTPError
		want string
	}{
		{SMTPError{Code: 550, EnhancedCode: "5.1.1", Message: "mailbox unavailable"}, "smtp 550 5.1.1 mailbox unavailable"},
		{SMTPError{Code: 451, Message: "later"}, "smtp 451 later"},
		{SMTPError{Code: 421}, "smtp 421"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestTemporary(t *testing.T) {
	t.Parallel()
	reply := func(code int) error {
		return fmt.Errorf("mailer: send: %w", asSMTPError(&textproto.Error{Code: code, Msg: "x"}))
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"4xx", reply(451), true},
		{"421", reply(421), true},
		{"5xx", reply(550), false},
		{"unexpected 2xx", reply(250), true},
		{"invalid message", invalid("subject contains CR or LF"), false},
		{"server hung up", fmt.Errorf("end of data: %w", io.EOF), true},
		{"i/o timeout", fmt.Errorf("read: %w", os.ErrDeadlineExceeded), true},
		{"deadline", context.DeadlineExceeded, true},
		{"cancelled", context.Canceled, true},
		{"reply nested in setup error", asSMTPError(fmt.Errorf("SMTP AUTH failed: %w",
			&textproto.Error{Code: 535, Msg: "5.7.8 bad credentials"})), false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("%s: Temporary(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
