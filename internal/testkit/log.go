package testkit

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// LogSink captures every log line a component writes, so a test can assert
// what was (and was not) logged.
type LogSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// NewLogger returns a debug-level JSON logger writing to a sink.
func NewLogger(t testing.TB) (zerolog.Logger, *LogSink) {
	t.Helper()
	sink := &LogSink{}
	return zerolog.New(sink).Level(zerolog.DebugLevel).With().Timestamp().Logger(), sink
}

func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// String is everything logged so far.
func (s *LogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Contains reports whether any log line contains sub.
func (s *LogSink) Contains(sub string) bool { return strings.Contains(s.String(), sub) }
