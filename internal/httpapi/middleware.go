package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"regexp"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/problem"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	principalKey
)

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// middleware resolves the client address, and adds a request id, a
// request-scoped logger, panic recovery and an access log line. The log
// carries the path only: query strings can hold tokens (the legacy API puts
// them there).
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r = s.withClientAddr(r)
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		log := s.deps.Logger.With().Str("request_id", id).Logger()
		ctx := context.WithValue(log.WithContext(r.Context()), requestIDKey, id)
		r = r.WithContext(ctx)
		rw := &statusWriter{ResponseWriter: w}

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error().Interface("panic", p).Str("path", r.URL.Path).Msg("handler panicked")
				if !rw.wroteHeader {
					s.writeError(rw, r, problem.New(http.StatusInternalServerError, "internal_error", "Something went wrong; the request id identifies it in the logs."))
				}
			}
			line := log.Info().
				Str("method", r.Method).
				Str("path", r.URL.Path).
				Int("status", rw.status()).
				Int64("bytes", rw.bytes).
				Dur("duration", time.Since(start)).
				Str("remote", clientAddr(r))
			if peer := peerAddr(r); peer != clientAddr(r) {
				line = line.Str("peer", peer) // the proxy the request came through
			}
			line.Msg("request")
		}()
		next.ServeHTTP(rw, r)
	})
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func logger(ctx context.Context) *zerolog.Logger { return zerolog.Ctx(ctx) }

// clientAddr is the client's address as the middleware resolved it (see
// resolveClientAddr: X-Forwarded-For counts only from trusted proxies), for
// audit and logs.
func clientAddr(r *http.Request) string {
	if a := clientIP(r.Context()); a.IsValid() {
		return a.String()
	}
	return peerAddr(r)
}

// peerAddr is the TCP peer's host.
func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	bytes       int64
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
