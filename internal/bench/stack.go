package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/natsembed"
	"github.com/latchkey/latchkey/internal/store"
)

const (
	benchDomain = "bench.service"
	emailDomain = "bench.example"
	// loginPassword is every seeded user's password, for the login scenario.
	loginPassword = "bench passphrase for logins"
)

// stack is the system under test: PostgreSQL (a fresh database on the
// given server), JetStream and the sink in this process, and latchkey
// processes spawned from the binary.
type stack struct {
	cfg      Config
	pool     *pgxpool.Pool
	dbURL    string
	nats     *natsembed.Server
	sink     *sink
	js       jetstream.JetStream
	apiURL   string
	procs    []*proc
	users    int
	nextUser int
	// extraEnv is added to every process's environment (LATCHKEY_...=...).
	extraEnv []string
}

type proc struct {
	role      string
	cmd       *exec.Cmd
	pprofAddr string
	done      chan error
}

func newStack(ctx context.Context, cfg Config) (_ *stack, err error) {
	if cfg.Database == "" {
		cfg.Database = "latchkey_bench"
	}
	s := &stack{cfg: cfg}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.dbURL, err = freshDatabase(ctx, cfg.DatabaseURL, cfg.Database); err != nil {
		return nil, err
	}
	if s.pool, err = store.Open(ctx, s.dbURL, 0); err != nil {
		return nil, err
	}
	if _, err = migrate.Up(ctx, s.pool); err != nil {
		return nil, err
	}
	if err = s.seed(ctx, cfg.Users); err != nil {
		return nil, err
	}
	storeDir, err := os.MkdirTemp("", "latchkey-bench-nats-")
	if err != nil {
		return nil, err
	}
	if s.nats, err = natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: storeDir}); err != nil {
		return nil, err
	}
	if s.sink, err = startSink(cfg.Users); err != nil {
		return nil, err
	}
	return s, nil
}

// freshDatabase drops and creates name on the server of serverURL.
func freshDatabase(ctx context.Context, serverURL, name string) (string, error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	cfg := conn.Config()
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", cfg.User, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), name), nil
}

// seed creates n users with one shared real argon2id hash, by COPY: hashing
// each would take minutes and measure nothing.
func (s *stack) seed(ctx context.Context, n int) error {
	hasher, err := credential.NewHasher(credential.HasherConfig{})
	if err != nil {
		return err
	}
	hash, err := hasher.Hash(ctx, loginPassword)
	if err != nil {
		return err
	}
	var domainID string
	if err := s.pool.QueryRow(ctx, "INSERT INTO domains (name) VALUES ($1) RETURNING id::text", benchDomain).Scan(&domainID); err != nil {
		return err
	}
	rows := make([][]any, n)
	for i := range n {
		rows[i] = []any{domainID, strconv.Itoa(100000 + i), fmt.Sprintf("u%d@%s", i, benchDomain),
			fmt.Sprintf("u%d@%s", i, emailDomain), "Bench", "User", "en", hash}
	}
	_, err = s.pool.CopyFrom(ctx, pgx.Identifier{"users"},
		[]string{"domain_id", "extension", "login_name", "email", "first_name", "last_name", "locale", "password_hash"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("seed users: %w", err)
	}
	_, err = s.pool.Exec(ctx, "ANALYZE users")
	s.users = n
	return err
}

// takeUsers hands out n user indexes never used before, so no request is
// limited or revoked by an earlier one for the same account.
func (s *stack) takeUsers(n int) (int, error) {
	if s.nextUser+n > s.users {
		return 0, fmt.Errorf("bench needs more seeded users (have %d, need %d): raise --users", s.users, s.nextUser+n)
	}
	first := s.nextUser
	s.nextUser += n
	return first, nil
}

func (s *stack) env(extra ...string) []string {
	env := []string{
		"LATCHKEY_DATABASE_URL=" + s.dbURL,
		"LATCHKEY_NATS_URL=" + s.nats.ClientURL(),
		"LATCHKEY_SMTP_URL=" + s.sink.URL(),
		"LATCHKEY_PUBLIC_BASE_URL=https://portal.bench.example",
		"LATCHKEY_LOG_LEVEL=" + s.cfg.LogLevel,
		// The harness is one client address and sends to many accounts.
		"LATCHKEY_RATE_LIMIT_PER_ADDRESS=1000000000/1s",
		"LATCHKEY_RATE_LIMIT_PER_ACCOUNT=1000/1s",
		"LATCHKEY_DATA_DIR=" + filepath.Join(os.TempDir(), "latchkey-bench-data"),
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
	}
	env = append(env, s.extraEnv...)
	return append(env, extra...)
}

// start spawns a latchkey process with args; its output goes to a log file.
func (s *stack) start(role string, args ...string) (*proc, error) {
	p := &proc{role: role, done: make(chan error, 1)}
	var extra []string
	if s.cfg.Profile {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p.pprofAddr = addr
		extra = append(extra, "LATCHKEY_PPROF_ADDR="+addr)
	}
	if role == "serve" {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s.apiURL = "http://" + addr
		extra = append(extra, "LATCHKEY_HTTP_ADDR="+addr)
	}
	logFile, err := os.Create(filepath.Join(s.cfg.OutDir, "logs", fmt.Sprintf("%s-%d.log", role, len(s.procs))))
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(s.cfg.Binary, args...)
	p.cmd.Env = s.env(extra...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	go func() { p.done <- p.cmd.Wait(); logFile.Close() }()
	s.procs = append(s.procs, p)
	return p, nil
}

func (s *stack) startWorkers(tokens, mailers int) error {
	for range tokens {
		if _, err := s.start("tokens", "worker", "tokens"); err != nil {
			return err
		}
	}
	for range mailers {
		if _, err := s.start("mailer", "worker", "mailer"); err != nil {
			return err
		}
	}
	// Wait until every worker's consumer exists, so the first phase does not
	// measure start-up.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ready, err := s.consumersReady(); err == nil && ready {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("workers did not create their consumers within 30s")
}

func (s *stack) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.apiURL+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("latchkey serve did not become ready within 30s")
}

// stopWorkers ends the worker processes (graceful, then hard).
func (s *stack) stopWorkers() {
	var keep []*proc
	for _, p := range s.procs {
		if p.role == "serve" {
			keep = append(keep, p)
			continue
		}
		p.stop()
	}
	s.procs = keep
}

// forget drops a process that has exited (killed by a drill) from the ones
// close stops.
func (s *stack) forget(p *proc) {
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i:i], s.procs[i+1:]...)
			return
		}
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rss is the process's resident set size in bytes, from /proc.
func (p *proc) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func (s *stack) close() {
	defer s.dropDatabase()
	for _, p := range s.procs {
		p.stop()
	}
	s.procs = nil
	if s.sink != nil {
		s.sink.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

// dropDatabase removes the bench database, so runs leave nothing behind
// but their report.
func (s *stack) dropDatabase() {
	if s.dbURL == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, s.cfg.DatabaseURL); err == nil {
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.cfg.Database+" WITH (FORCE)")
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
