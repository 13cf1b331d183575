package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/cli"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/smtptest"
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
		Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Environ: func() []string {
			var out []string
			for k, v := range vars {
				out = append(out, k+"="+v)
			}
			return out
		},
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
// database, uses the API it prints, and stops it the way Ctrl-C does. The
// banner appears once, when the API answers; without a public base URL the
// links in email follow the address dev listens on; the log has one line at
// start-up naming version, roles and addresses, one at shutdown, and no
// colours off a terminal.
func TestDevRunsTheStackAndStopsCleanly(t *testing.T) {
	db := testkit.EmptyDB(t)
	sink := smtptest.NewStarted(t, smtptest.Config{})
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	env := envFor(map[string]string{
		"LATCHKEY_DATABASE_URL":    db.URL,
		"LATCHKEY_DATA_DIR":        t.TempDir(),
		"LATCHKEY_NATS_LISTEN":     "127.0.0.1:0",
		"LATCHKEY_HTTP_ADDR":       "127.0.0.1:0",
		"LATCHKEY_SMTP_URL":        "smtp://" + sink.Addr(),
		"LATCHKEY_ADMIN_TOKEN":     "dev-test-admin-token",
		"LATCHKEY_DEV_MAILBOX_URL": "http://127.0.0.1:1080",
		"LATCHKEY_LOG_FORMAT":      "console",
	}, stdout, stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, env, []string{"dev"}) }()

	apiURL := regexp.MustCompile(`API\s+(http://\S+)`)
	var base string
	deadline := time.Now().Add(60 * time.Second)
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
	// The banner is printed once the API answers, so it answers now.
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz right after the banner = %d", resp.StatusCode)
	}
	banner := stdout.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Latchkey test is ready \(Ctrl-C stops it\)\n`),
		regexp.MustCompile(`Mailbox\s+http://127.0.0.1:1080\n`),
		regexp.MustCompile(`Email links\s+` + regexp.QuoteMeta(base) + `\n`),
		regexp.MustCompile(`Admin token\s+the value of LATCHKEY_ADMIN_TOKEN\n`),
		regexp.MustCompile(`NATS\s+nats://127.0.0.1:\d+\n`),
	} {
		if !want.MatchString(banner) {
			t.Errorf("banner lacks %s:\n%s", want, banner)
		}
	}

	admin := func(method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer dev-test-admin-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := admin("POST", "/v1/admin/domains", `{"name":"acme.11111.service"}`); resp.StatusCode != 201 {
		t.Fatalf("create domain through dev = %d", resp.StatusCode)
	}
	if resp := admin("POST", "/v1/admin/users", `{"domain":"acme.11111.service","extension":"1001","email":"jason@example.com","first_name":"Jason","pin":"8264"}`); resp.StatusCode != 201 {
		t.Fatalf("create user through dev = %d", resp.StatusCode)
	}
	resp, err = http.Post(base+"/v1/password/forgot", "application/json", strings.NewReader(`{"identifier":"jason@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("forgot = %d", resp.StatusCode)
	}
	waitCtx, waitCancel := context.WithTimeout(ctx, 60*time.Second)
	msgs, err := sink.WaitForCount(waitCtx, 1)
	waitCancel()
	if err != nil {
		t.Fatalf("no reset email: %v\n%s", err, stderr.String())
	}
	parsed, err := msgs[0].Parse()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(parsed.Text, base+"/reset?token=") {
		t.Errorf("the reset link does not follow the listening address %s:\n%s", base, parsed.Text)
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
	if n := strings.Count(stdout.String(), "is ready"); n != 1 {
		t.Errorf("the banner appeared %d times:\n%s", n, stdout.String())
	}
	logs := stderr.String()
	if strings.Contains(logs, "dev-test-admin-token") {
		t.Fatal("the admin token appears in the log")
	}
	if strings.Contains(logs, "\x1b[") {
		t.Errorf("console logs to a non-terminal carry colour escapes:\n%q", logs)
	}
	started := regexp.MustCompile(`(?m)^.*latchkey started.*$`).FindAllString(logs, -1)
	if len(started) != 1 {
		t.Fatalf("start-up lines = %q", started)
	}
	for _, want := range []string{"version=test", "roles=[\"ingress\",\"tokens\",\"mailer\",\"notifier\",\"campaigns\",\"scheduler\"]",
		"http=" + strings.TrimPrefix(base, "http://"), "nats=nats://127.0.0.1:"} {
		if !strings.Contains(started[0], want) {
			t.Errorf("start-up line %q lacks %q", started[0], want)
		}
	}
	if n := strings.Count(logs, "latchkey stopped"); n != 1 {
		t.Errorf("shutdown lines = %d:\n%s", n, logs)
	}
}

// helpLine matches one flag of a help text: its name and the type shown.
var helpLine = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)(?: (\S+))?\s{2,}\S`)

// TestHelp: -h, --help and `help COMMAND` print a command's help and
// succeed; each command lists only the settings it uses, each with its type,
// default and variable, and no line is garbled.
func TestHelp(t *testing.T) {
	settingByFlag := map[string]config.Setting{}
	for _, s := range config.Settings() {
		settingByFlag[s.Flag()] = s
	}
	cases := []struct {
		args   []string
		with   []string // settings it must list
		absent []string // settings it must not
		exact  bool     // with is the whole list
	}{
		{[]string{"serve"}, []string{"HTTP_ADDR", "TRUSTED_PROXIES", "DISCLOSURE", "SESSION_TTL", "DATABASE_URL", "NATS_LISTEN", "LOG_LEVEL", "PPROF_ADDR", "LOGIN_AFTER_RESET"},
			[]string{"SMTP_URL", "OPS_ADDR", "DEV_MAILBOX_URL", "MAIL_FROM_ADDRESS", "EVENT_ACK_WAIT", "PUBLIC_BASE_URL", "WELCOME_TTL"}, false},
		{[]string{"worker"}, []string{"SMTP_URL", "OPS_ADDR", "PUBLIC_BASE_URL", "RESET_TTL", "EVENT_ACK_WAIT", "UNLOCK_ON_RESET", "LOCKOUT_THRESHOLD"},
			[]string{"HTTP_ADDR", "TRUSTED_PROXIES", "ADMIN_TOKEN", "DEV_MAILBOX_URL", "MAX_BODY_BYTES", "SESSION_TTL"}, false},
		{[]string{"dev"}, []string{"HTTP_ADDR", "SMTP_URL", "DEV_MAILBOX_URL", "PUBLIC_BASE_URL", "NATS_LISTEN"}, []string{"OPS_ADDR"}, false},
		{[]string{"migrate"}, []string{"DATABASE_URL", "DB_MAX_CONNS", "LOG_LEVEL", "LOG_FORMAT"}, nil, true},
		{[]string{"admin-key", "create"}, []string{"DATABASE_URL", "DB_MAX_CONNS", "LOG_LEVEL", "LOG_FORMAT"}, nil, true},
		{[]string{"bench"}, []string{"DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT"}, nil, true},
	}
	for _, c := range cases {
		name := strings.Join(c.args, " ")
		var outputs []string
		for _, args := range [][]string{append(slices.Clone(c.args), "-h"), append(slices.Clone(c.args), "--help"), append([]string{"help"}, c.args...)} {
			var out, errOut bytes.Buffer
			if err := cli.Run(context.Background(), envFor(nil, &out, &errOut), args); err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			outputs = append(outputs, out.String())
		}
		if outputs[0] != outputs[1] || outputs[0] != outputs[2] {
			t.Errorf("%s: -h, --help and help differ", name)
		}
		help := outputs[0]
		if strings.Contains(help, "`") {
			t.Errorf("%s: a backquote in the help", name)
		}
		listed := map[string]bool{}
		for _, m := range helpLine.FindAllStringSubmatch(help, -1) {
			s, ok := settingByFlag[m[1]]
			if !ok {
				continue
			}
			listed[s.Name] = true
			want := s.Type
			if want == "bool" {
				want = "" // a boolean flag takes no value after a space
			}
			if m[2] != want {
				t.Errorf("%s: --%s shows type %q, want %q", name, m[1], m[2], want)
			}
		}
		for _, s := range c.with {
			if !listed[s] {
				t.Errorf("%s: does not list %s:\n%s", name, s, help)
			}
		}
		for _, s := range c.absent {
			if listed[s] {
				t.Errorf("%s: lists %s, which it does not use", name, s)
			}
		}
		if c.exact && len(listed) != len(c.with) {
			t.Errorf("%s: lists %v, want exactly %v", name, listed, c.with)
		}
	}
	var out bytes.Buffer
	if err := cli.Run(context.Background(), envFor(nil, &out, io.Discard), []string{"serve", "-h"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"--session-ttl duration", "[LATCHKEY_SESSION_TTL] (default 12h)",
		"--disclosure explicit|uniform", "(default explicit)",
		"--http-addr host:port", "(default 127.0.0.1:8080)",
		"--login-after-reset ", "(default true)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
	out.Reset()
	if err := cli.Run(context.Background(), envFor(nil, &out, io.Discard), []string{"-h"}); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"dev", "serve", "worker", "migrate", "admin-key", "bench", "version"} {
		if !regexp.MustCompile(`(?m)^  ` + cmd + `\s+\S`).MatchString(out.String()) {
			t.Errorf("latchkey -h does not list %s:\n%s", cmd, out.String())
		}
	}
	if helpLine.MatchString(out.String()) && strings.Contains(out.String(), "--database-url") {
		t.Error("latchkey -h lists settings; only commands have them")
	}
}

func TestVersion(t *testing.T) {
	info := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/latchkey/latchkey", Version: "v0.0.0-20261129225304-068731db79d5"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "068731db79d5e0b959bbbecb6152e9c71a562308"},
			{Key: "vcs.time", Value: "2026-11-29T22:53:04Z"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	want := "latchkey v0.0.0-20261129225304-068731db79d5 revision 068731db79d5e0b959bbbecb6152e9c71a562308 (2026-11-29T22:53:04Z) go1.26.8\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		var out bytes.Buffer
		env := envFor(nil, &out, io.Discard)
		env.Version = ""
		env.BuildInfo = func() (*debug.BuildInfo, bool) { return info, true }
		if err := cli.Run(context.Background(), env, args); err != nil || out.String() != want {
			t.Errorf("%v: %q, %v; want %q", args, out.String(), err, want)
		}
	}
	var out bytes.Buffer
	env := envFor(nil, &out, io.Discard)
	env.Version = ""
	env.BuildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, true
	}
	if err := cli.Run(context.Background(), env, []string{"version"}); err != nil ||
		!strings.HasPrefix(out.String(), "latchkey (devel) (no VCS revision") {
		t.Errorf("without VCS information: %q, %v", out.String(), err)
	}
}

// TestUnknownVariables: a typo of a setting stops start-up and names the
// setting meant; another unknown LATCHKEY_ name is a warning in the log.
func TestUnknownVariables(t *testing.T) {
	var out, errOut bytes.Buffer
	env := envFor(map[string]string{"LATCHKEY_RESTE_TTL": "10m"}, &out, &errOut)
	err := cli.Run(context.Background(), env, []string{"serve"})
	if err == nil || errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "LATCHKEY_RESTE_TTL is not a setting: did you mean LATCHKEY_RESET_TTL?") {
		t.Fatalf("serve with LATCHKEY_RESTE_TTL: %v", err)
	}
	db := testkit.EmptyDB(t)
	env = envFor(map[string]string{"LATCHKEY_DATABASE_URL": db.URL, "LATCHKEY_FEATURE_FROM_THE_FUTURE": "on"}, &out, &errOut)
	if err := cli.Run(context.Background(), env, []string{"migrate"}); err != nil {
		t.Fatalf("migrate with an unknown variable far from any setting: %v", err)
	}
	if !strings.Contains(errOut.String(), "LATCHKEY_FEATURE_FROM_THE_FUTURE is not a setting of this version; it is ignored") ||
		!strings.Contains(errOut.String(), `"level":"warn"`) {
		t.Fatalf("no warning logged: %s", errOut.String())
	}
}

// TestBusyPortsNameTheirVariable: a port that is taken stops start-up with a
// message that says so and names the variable that moves it.
func TestBusyPortsNameTheirVariable(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	db := testkit.NewDB(t)
	var out, errOut bytes.Buffer
	env := envFor(map[string]string{
		"LATCHKEY_DATABASE_URL": db.URL, "LATCHKEY_DATA_DIR": t.TempDir(), "LATCHKEY_NATS_LISTEN": busy.Addr().String(),
	}, &out, &errOut)
	err = cli.Run(context.Background(), env, []string{"serve"})
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()+" is already in use") || !strings.Contains(err.Error(), "LATCHKEY_NATS_LISTEN") {
		t.Fatalf("serve with a busy NATS port: %v", err)
	}
	env = envFor(map[string]string{
		"LATCHKEY_DATABASE_URL": db.URL, "LATCHKEY_DATA_DIR": t.TempDir(), "LATCHKEY_NATS_LISTEN": "127.0.0.1:0",
		"LATCHKEY_HTTP_ADDR": busy.Addr().String(),
	}, &out, &errOut)
	for _, command := range []string{"serve", "dev"} {
		err = cli.Run(context.Background(), env, []string{command})
		if err == nil || !strings.Contains(err.Error(), busy.Addr().String()+" is already in use") || !strings.Contains(err.Error(), "LATCHKEY_HTTP_ADDR") {
			t.Fatalf("%s with a busy HTTP port: %v", command, err)
		}
	}
}
