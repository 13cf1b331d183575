package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/cli"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is written by the command and read by the test concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

func envFor(vars map[string]string, stdout, stderr io.Writer) cli.Env {
	return cli.Env{
		Lookup:  func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Stdout:  stdout,
		Stderr:  stderr,
		Version: "test",
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	env := envFor(nil, &out, &errOut)
	for _, args := range [][]string{{}, {"nonsense"}, {"worker", "typist"}, {"admin-key"}, {"serve", "--no-such-flag"}} {
		if err := cli.Run(context.Background(), env, args); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	if err := cli.Run(context.Background(), env, []string{"version"}); err != nil || !strings.Contains(out.String(), "latchkey test") {
		t.Fatalf("version: %v %q", err, out.String())
	}
}

func TestBadConfigurationStopsStartUp(t *testing.T) {
	var out, errOut bytes.Buffer
	env := envFor(map[string]string{"LATCHKEY_WELCOME_TTL": "forever"}, &out, &errOut)
	err := cli.Run(context.Background(), env, []string{"serve"})
	if err == nil || !strings.Contains(err.Error(), "LATCHKEY_WELCOME_TTL") {
		t.Fatalf("err = %v, want one naming LATCHKEY_WELCOME_TTL", err)
	}
	// A flag is checked the same way and named as a flag.
	err = cli.Run(context.Background(), envFor(nil, &out, &errOut), []string{"serve", "--disclosure=loud"})
	if err == nil || !strings.Contains(err.Error(), "--disclosure") {
		t.Fatalf("err = %v, want one naming --disclosure", err)
	}
}

func TestServeRefusesAnOutdatedSchema(t *testing.T) {
	db := testkit.EmptyDB(t)
	var out, errOut bytes.Buffer
	env := envFor(map[string]string{"LATCHKEY_DATABASE_URL": db.URL, "LATCHKEY_DATA_DIR": t.TempDir(), "LATCHKEY_NATS_LISTEN": "127.0.0.1:0"}, &out, &errOut)
	err := cli.Run(context.Background(), env, []string{"serve"})
	if err == nil || !strings.Contains(err.Error(), "latchkey migrate") {
		t.Fatalf("serve on an empty database: %v", err)
	}
	if err := cli.Run(context.Background(), env, []string{"migrate"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "schema at version") {
		t.Fatalf("migrate printed %q", out.String())
	}
}

func TestAdminKeyCreate(t *testing.T) {
	db := testkit.NewDB(t)
	var out, errOut bytes.Buffer
	env := envFor(map[string]string{"LATCHKEY_DATABASE_URL": db.URL}, &out, &errOut)
	if err := cli.Run(context.Background(), env, []string{"admin-key", "create", "--name", "ops"}); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out.String())
	if !regexp.MustCompile(`^lk_admin_[A-Za-z0-9_-]{43}$`).MatchString(key) {
		t.Fatalf("printed key %q", key)
	}
	var stored int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM admin_keys WHERE name = 'ops'").Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("stored keys = %d, %v", stored, err)
	}
	var clear int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM admin_keys WHERE position($1::bytea in key_hash) > 0", []byte(key)).Scan(&clear); err != nil || clear != 0 {
		t.Fatalf("the key is stored in clear (%d, %v)", clear, err)
	}
	err := cli.Run(context.Background(), env, []string{"admin-key", "create", "--name", "x", "--domain", "nowhere.service"})
	if err == nil {
		t.Fatal("a key for an unknown domain was created")
	}
}

// TestDevRunsTheStackAndStopsCleanly starts `latchkey dev` on a fresh
// database, uses the API it prints, and stops it the way Ctrl-C does.
func TestDevRunsTheStackAndStopsCleanly(t *testing.T) {
	db := testkit.EmptyDB(t)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	env := envFor(map[string]string{
		"LATCHKEY_DATABASE_URL":    db.URL,
		"LATCHKEY_DATA_DIR":        t.TempDir(),
		"LATCHKEY_NATS_LISTEN":     "127.0.0.1:0",
		"LATCHKEY_HTTP_ADDR":       "127.0.0.1:0",
		"LATCHKEY_ADMIN_TOKEN":     "dev-test-admin-token",
		"LATCHKEY_DEV_MAILBOX_URL": "http://127.0.0.1:1080",
	}, stdout, stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, env, []string{"dev"}) }()

	apiURL := regexp.MustCompile(`API:\s+(http://\S+)`)
	var base string
	deadline := time.Now().Add(30 * time.Second)
	for base == "" {
		if m := apiURL.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("dev exited early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev printed no API URL:\n%s\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stdout.String(), "Mailbox:  http://127.0.0.1:1080") {
		t.Errorf("dev did not print the mailbox URL:\n%s", stdout.String())
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz = %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"/v1/admin/domains", strings.NewReader(`{"name":"acme.11111.service"}`))
	req.Header.Set("Authorization", "Bearer dev-test-admin-token")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create domain through dev = %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev stopped with %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of the signal")
	}
	if strings.Contains(stderr.String(), "dev-test-admin-token") {
		t.Fatal("the admin token appears in the log")
	}
}
