// Package logging builds the process's zerolog logger.
package logging

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// New returns a logger writing JSON lines, or human-readable lines when
// format is "console".
func New(w io.Writer, level, format string) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}
