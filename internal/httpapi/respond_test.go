package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

// Each way a client can fail to deliver its request maps to a 4xx and an
// info line at most; the end-to-end tests drive the ones a real connection
// can produce on demand, this one the whole table.
func TestWriteErrorClientFaults(t *testing.T) {
	readErr := func(err error) error { return &net.OpError{Op: "read", Net: "tcp", Err: err} }
	cases := []struct {
		name   string
		err    error
		cancel bool
		status int
		code   string
	}{
		{"closed before Content-Length", &bodyReadError{err: io.ErrUnexpectedEOF}, true, 400, "incomplete_body"},
		{"reset", &bodyReadError{err: readErr(os.NewSyscallError("read", syscall.ECONNRESET))}, true, 400, "incomplete_body"},
		{"malformed chunks", &bodyReadError{err: errors.New("malformed chunked encoding")}, false, 400, "incomplete_body"},
		{"read timeout", &bodyReadError{err: readErr(os.ErrDeadlineExceeded)}, true, 408, "request_timeout"},
		{"wrapped by a handler", fmt.Errorf("create users: %w", &bodyReadError{err: io.ErrUnexpectedEOF}), true, 400, "incomplete_body"},
		{"cancelled while served", fmt.Errorf("lookup: %w", context.Canceled), true, 499, "client_closed_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := zerolog.New(&logs)
			ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
			defer cancel()
			if c.cancel {
				cancel()
			}
			r := httptest.NewRequestWithContext(ctx, "POST", "/v1/password/forgot", nil)
			w := httptest.NewRecorder()
			(&Server{}).writeError(w, r, c.err)
			if w.Code != c.status || !strings.Contains(w.Body.String(), `"code":"`+c.code+`"`) {
				t.Fatalf("answer %d %s, want %d %s", w.Code, w.Body, c.status, c.code)
			}
			if strings.Contains(logs.String(), `"level":"error"`) || strings.Contains(logs.String(), `"level":"warn"`) {
				t.Fatalf("logged as a server fault: %s", logs.String())
			}
			if c.status != 499 && w.Header().Get("Connection") != "close" {
				t.Errorf("Connection = %q, want close: the body's framing is lost", w.Header().Get("Connection"))
			}
		})
	}
	// The same errors outside a body read are the server's own.
	w := httptest.NewRecorder()
	(&Server{}).writeError(w, httptest.NewRequest("POST", "/", nil), fmt.Errorf("query: %w", io.ErrUnexpectedEOF))
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("unexpected EOF from a dependency: %d", w.Code)
	}
}
