package logging_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/logging"
)

func TestConsoleColoursOnlyWhenAsked(t *testing.T) {
	for _, color := range []bool{false, true} {
		var buf bytes.Buffer
		log := logging.New(&buf, logging.Options{Level: "info", Format: "console", Color: color})
		log.Info().Str("k", "v").Msg("hello")
		if got := strings.Contains(buf.String(), "\x1b["); got != color {
			t.Errorf("Color %v: escapes present = %v in %q", color, got, buf.String())
		}
		if !strings.Contains(buf.String(), "hello") {
			t.Errorf("Color %v: message missing from %q", color, buf.String())
		}
	}
}

func TestColorFor(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	// A buffer, a regular file and a pipe are not terminals.
	if logging.ColorFor(&bytes.Buffer{}, none) {
		t.Error("a buffer gets colours")
	}
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if logging.ColorFor(f, none) {
		t.Error("a file gets colours")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if logging.ColorFor(w, none) {
		t.Error("a pipe gets colours")
	}
	// A terminal does, unless NO_COLOR is set and not empty.
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer tty.Close()
	if !logging.ColorFor(tty, none) {
		t.Error("a terminal gets no colours")
	}
	if logging.ColorFor(tty, func(k string) (string, bool) { return "1", k == "NO_COLOR" }) {
		t.Error("NO_COLOR=1 is ignored")
	}
	if !logging.ColorFor(tty, func(k string) (string, bool) { return "", k == "NO_COLOR" }) {
		t.Error("an empty NO_COLOR turns colours off")
	}
}
