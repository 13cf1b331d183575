// Package deploy holds no Go code: these tests check the scripts and files
// that run Latchkey locally and in containers.
package deploy_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maildevVersion is the one pinned version of MailDev.
func maildevVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("maildev.version")
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(b))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("maildev.version holds %q, not a version such as 3.0.0", v)
	}
	return v
}

// TestMaildevIsPinnedOnce: `make run` (local/maildev.sh) and the compose
// file take MailDev's version from maildev.version, and no other file names
// one, so the two cannot drift apart.
func TestMaildevIsPinnedOnce(t *testing.T) {
	maildevVersion(t)
	for file, want := range map[string]string{
		"local/maildev.sh":   `$repo/deploy/maildev.version`,
		"maildev.Dockerfile": `COPY maildev.version`,
		"compose.yaml":       `dockerfile: maildev.Dockerfile`,
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not take the version from maildev.version (no %q)", file, want)
		}
	}
	// A pinned version anywhere else: maildev@2.2.1, maildev/maildev:2.2.1,
	// LATCHKEY_MAILDEV_VERSION:-3.0.0.
	pin := regexp.MustCompile(`(?i)maildev[^\s"']*[@:](-)?v?\d+\.\d+`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".local", ".git", "node_modules", "bench-out":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, "_test.go") || filepath.Base(path) == "maildev.version" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if m := pin.Find(b); m != nil {
			t.Errorf("%s pins MailDev itself (%q); take the version from deploy/maildev.version", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMaildevMailboxIsPrivate runs local/maildev.sh with a stand-in for the
// installed maildev: the messages go to a directory under the install
// directory that only the owner may enter, and what maildev writes there
// is the owner's alone.
func TestMaildevMailboxIsPrivate(t *testing.T) {
	version := maildevVersion(t)
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is needed by local/maildev.sh (and `make run`): install Node.js")
	}
	for _, existing := range []bool{false, true} {
		dir := t.TempDir()
		pkg := filepath.Join(dir, "node_modules", "maildev")
		bin := filepath.Join(dir, "node_modules", ".bin")
		for _, d := range []string{pkg, bin} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(pkg, "package.json"), []byte(`{"name":"maildev","version":"`+version+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		// The stand-in records its arguments and writes a message where it
		// was told to keep them.
		fake := `#!/bin/sh
printf '%s\n' "$@" >"$0.args"
while [ $# -gt 0 ]; do
	if [ "$1" = --mail-directory ]; then echo message >"$2/1.eml"; fi
	shift
done
`
		if err := os.WriteFile(filepath.Join(bin, "maildev"), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
		mail := filepath.Join(dir, "mail")
		if existing {
			// A mailbox left world-readable by an earlier version.
			if err := os.Mkdir(mail, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("bash", "local/maildev.sh")
		cmd.Env = append(os.Environ(), "LATCHKEY_MAILDEV_DIR="+dir, "LATCHKEY_MAILDEV_SMTP_PORT=2525", "LATCHKEY_MAILDEV_WEB_PORT=2580")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("maildev.sh: %v\n%s", err, out)
		}
		args, err := os.ReadFile(filepath.Join(bin, "maildev.args"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(args), "--mail-directory\n"+mail+"\n") {
			t.Errorf("maildev was not given --mail-directory %s:\n%s", mail, args)
		}
		for _, want := range []string{"--ip\n127.0.0.1\n", "--web-ip\n127.0.0.1\n", "--smtp\n2525\n", "--web\n2580\n"} {
			if !strings.Contains(string(args), want) {
				t.Errorf("maildev's arguments lack %q:\n%s", want, args)
			}
		}
		for path, want := range map[string]os.FileMode{mail: 0o700, filepath.Join(mail, "1.eml"): 0o600} {
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Mode().Perm(); got != want {
				t.Errorf("existing mailbox %v: %s has mode %o, want %o", existing, path, got, want)
			}
		}
	}
}
