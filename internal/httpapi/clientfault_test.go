package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/apptest"
)

// truncatedForgot is a request that declares 100 bytes of body; the 14 that
// follow it are sent separately.
const truncatedForgot = "POST /v1/password/forgot HTTP/1.1\r\nHost: latchkey.test\r\n" +
	"Content-Type: application/json\r\nContent-Length: 100\r\n"

const first14 = `{"identifier":`

// requestCount is latchkey_http_requests_total for route and code.
func requestCount(t *testing.T, s *apptest.Stack, route, code string) float64 {
	t.Helper()
	var n float64
	for key, v := range requestCounts(t, s) {
		if key[0] == route && key[1] == code {
			n += v
		}
	}
	return n
}

// requestCounts is latchkey_http_requests_total by route and code.
func requestCounts(t *testing.T, s *apptest.Stack) map[[2]string]float64 {
	t.Helper()
	families, err := s.App.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]float64{}
	for _, f := range families {
		if f.GetName() != "latchkey_http_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var route, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			out[[2]string{route, code}] += m.GetCounter().GetValue()
		}
	}
	return out
}

// waitForCount waits until the metrics count n answers of code on route:
// a client that closed cannot read its answer, so the metrics say when the
// server is done with it.
func waitForCount(t *testing.T, s *apptest.Stack, route, code string, n float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for requestCount(t, s, route, code) < n {
		if time.Now().After(deadline) {
			t.Fatalf("metrics count %v answers %s to %s, want %v; all: %v\nlogs:\n%s",
				requestCount(t, s, route, code), code, route, n, requestCounts(t, s), s.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNoServerFault checks that nothing was counted as a 5xx and that no
// error-level line was logged.
func assertNoServerFault(t *testing.T, s *apptest.Stack) {
	t.Helper()
	for key, v := range requestCounts(t, s) {
		if strings.HasPrefix(key[1], "5") && v > 0 {
			t.Errorf("metrics count %v answers %s to %s", v, key[1], key[0])
		}
	}
	for _, line := range strings.Split(s.Logs.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) {
			t.Errorf("error logged: %s", line)
		}
	}
}

// sendHeadThen opens a connection, sends the head of truncatedForgot with
// Expect: 100-continue and waits for the interim answer, which net/http
// sends when the handler starts reading the body: from then on the handler
// is in its body read, whatever the client does next.
func sendHeadThen(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*net.TCPConn)
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, truncatedForgot+"Expect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("interim answer %q, %v", line, err)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("interim answer ends with %q, %v", blank, err)
	}
	if _, err := io.WriteString(conn, first14); err != nil {
		t.Fatal(err)
	}
	return conn, br
}

// A body cut short by the client is the client's fault: 400, not 500, no
// error line, no 5xx in the metrics, whether the client closes, resets or
// half-closes the connection (the only one of the three that can still read
// the answer), or breaks the chunked framing.
func TestBodyCutShortIsAClientFault(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	addr := s.Server.Listener.Addr().String()
	const route = "POST /v1/password/forgot"

	conn, br := sendHeadThen(t, addr)
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"incomplete_body"`) {
		t.Fatalf("half-closed: %d %s", resp.StatusCode, body)
	}
	waitForCount(t, s, route, "400", 1)

	conn, _ = sendHeadThen(t, addr)
	conn.Close()
	waitForCount(t, s, route, "400", 2)

	conn, _ = sendHeadThen(t, addr)
	if err := conn.SetLinger(0); err != nil { // close with a reset
		t.Fatal(err)
	}
	conn.Close()
	waitForCount(t, s, route, "400", 3)

	// A chunked body whose framing breaks is cut short too.
	chunked, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer chunked.Close()
	if err := chunked.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(chunked, strings.Replace(truncatedForgot, "Content-Length: 100", "Transfer-Encoding: chunked", 1)+
		"\r\ne\r\n"+first14+"\r\nzz\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(chunked), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"incomplete_body"`) {
		t.Fatalf("malformed chunks: %d %s", resp.StatusCode, body)
	}
	waitForCount(t, s, route, "400", 4)

	assertNoServerFault(t, s)
	if n := strings.Count(s.Logs.String(), "request body not received whole"); n != 4 {
		t.Errorf("%d lines say why, want 4:\n%s", n, s.Logs.String())
	}
}

// A client that sends part of its body and waits is cut off by the server's
// read timeout and answered 408, again without an error line or a 5xx.
func TestBodyTooSlowIsRequestTimeout(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	// The same handler behind an http.Server as app.Serve builds it, with a
	// read timeout short enough for a test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Server.Config.Handler, ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("serve: %v", err)
		}
	})

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, truncatedForgot+"\r\n"+first14); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"code":"request_timeout"`) {
		t.Fatalf("answer %d %s", resp.StatusCode, body)
	}
	waitForCount(t, s, "POST /v1/password/forgot", "408", 1)
	assertNoServerFault(t, s)
}
