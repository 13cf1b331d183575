package main_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// latchkey builds the binary once per test run.
func latchkey(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "latchkey")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestExitStatus runs the real binary as an operator would: help succeeds
// on stdout, a mistake in the command line exits 2 with the error on
// stderr, a failure at start-up exits 1.
func TestExitStatus(t *testing.T) {
	bin := latchkey(t)
	cases := []struct {
		args       []string
		env        []string
		status     int
		stdout     string // a substring
		stderr     string
		noStdout   bool
		noSettings bool
	}{
		{args: []string{"-h"}, stdout: "Usage:\n  latchkey COMMAND [flags]", noSettings: true},
		{args: []string{"--help"}, stdout: "serve        run the HTTP API (ingress)", noSettings: true},
		{args: []string{"help", "serve"}, stdout: "--session-ttl duration"},
		{args: []string{"serve", "-h"}, stdout: "--http-addr host:port"},
		{args: []string{"version"}, stdout: "latchkey "},
		{args: []string{"--version"}, stdout: "latchkey "},
		{args: nil, status: 2, stderr: "latchkey: a command is needed (see 'latchkey --help')", noStdout: true},
		{args: []string{"serve", "--no-such-flag"}, status: 2, stderr: "unknown flag: --no-such-flag (see 'latchkey serve --help')", noStdout: true},
		{args: []string{"frobnicate"}, status: 2, stderr: `unknown command "frobnicate"`, noStdout: true},
		{args: []string{"worker", "typist"}, status: 2, stderr: `unknown worker role "typist"`, noStdout: true},
		{args: []string{"serve"}, env: []string{"LATCHKEY_RESTE_TTL=10m"}, status: 1, stderr: "did you mean LATCHKEY_RESET_TTL?", noStdout: true},
		{args: []string{"serve", "--unlock-on-reset"}, status: 2, stderr: "unknown flag: --unlock-on-reset", noStdout: true},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, c.args...)
		// Only what the case sets, so the machine's LATCHKEY_ variables
		// (the test database's) cannot change the outcome.
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, c.env...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		status := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			status = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if status != c.status {
			t.Errorf("%v: exit status %d, want %d\nstdout: %s\nstderr: %s", c.args, status, c.status, stdout.String(), stderr.String())
		}
		if !strings.Contains(stdout.String(), c.stdout) {
			t.Errorf("%v: stdout lacks %q:\n%s", c.args, c.stdout, stdout.String())
		}
		if !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("%v: stderr lacks %q:\n%s", c.args, c.stderr, stderr.String())
		}
		if c.noStdout && stdout.Len() > 0 {
			t.Errorf("%v: stdout not empty:\n%s", c.args, stdout.String())
		}
		if c.noSettings && strings.Contains(stdout.String(), "--database-url") {
			t.Errorf("%v: the overview lists settings", c.args)
		}
	}
}
