// Package logging builds the process's zerolog logger.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Options say how the process logs.
type Options struct {
	Level  string // debug, info, warn or error; anything else is info
	Format string // json, or console for people
	// Color paints console lines with ANSI escapes; ColorFor says when.
	Color bool
}

// New returns a logger writing JSON lines, or human-readable lines when
// opts.Format is "console".
func New(w io.Writer, opts Options) zerolog.Logger {
	if opts.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !opts.Color}
	}
	lvl, err := zerolog.ParseLevel(opts.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// ColorFor reports whether console logs written to w should be coloured:
// only when w is a terminal, and not when the NO_COLOR convention
// (https://no-color.org: set and not empty) asks for none. Escapes in a file
// or a log collector's pipe are noise.
func ColorFor(w io.Writer, lookup func(string) (string, bool)) bool {
	if v, ok := lookup("NO_COLOR"); ok && v != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
