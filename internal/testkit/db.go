// Package testkit gives tests real infrastructure in a line or two: an
// isolated migrated PostgreSQL database, an in-process nats-server with
// JetStream, and a log sink. Nothing here is a fake.
package testkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/schema"
)

// DatabaseURLEnv names a PostgreSQL server for tests. When it is unset the
// suite starts the project's private cluster (deploy/local/pg.sh) itself
// rather than skipping.
const DatabaseURLEnv = "LATCHKEY_TEST_DATABASE_URL"

// templateCache remembers, per test process, the migrated template database
// that per-test databases are cloned from; building it is the slow part.
var templateCache struct {
	sync.Mutex
	serverURL string
	name      string
}

// DB is an isolated database for one test.
type DB struct {
	Pool *pgxpool.Pool
	URL  string
	Name string
}

// NewDB creates a fresh database cloned from the migrated template and drops
// it when the test ends.
func NewDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	serverURL, tmpl, err := templateDatabase(ctx)
	if err != nil {
		t.Fatalf("testkit: prepare template database: %v", err)
	}
	return createDatabase(ctx, t, serverURL, " TEMPLATE "+tmpl)
}

// EmptyDB creates a database with no schema at all, for migration tests.
func EmptyDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serverURL, err := ServerURL(ctx)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return createDatabase(ctx, t, serverURL, "")
}

// createDatabase makes a uniquely named database (options such as a
// TEMPLATE clause appended) and drops it when the test ends.
func createDatabase(ctx context.Context, t testing.TB, serverURL, options string) *DB {
	t.Helper()
	name := "latchkey_test_" + randomHex(6)
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("testkit: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+options); err != nil {
		t.Fatalf("testkit: create database: %v", err)
	}
	url := withDatabase(serverURL, name)
	pool, err := store.Open(ctx, url, 0)
	if err != nil {
		t.Fatalf("testkit: open pool: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Errorf("testkit: connect to drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testkit: drop %s: %v", name, err)
		}
	})
	return &DB{Pool: pool, URL: url, Name: name}
}

// ServerURL is the PostgreSQL server the tests use, started if need be.
func ServerURL(ctx context.Context) (string, error) {
	if url := os.Getenv(DatabaseURLEnv); url != "" {
		return url, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	// pg.sh serialises concurrent callers (go test runs packages in parallel)
	// and is a no-op when the cluster already runs.
	cmd := exec.CommandContext(ctx, filepath.Join(root, "deploy", "local", "pg.sh"), "start")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("start PostgreSQL with deploy/local/pg.sh: %w\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func templateDatabase(ctx context.Context) (serverURL, name string, err error) {
	templateCache.Lock()
	defer templateCache.Unlock()
	if templateCache.name != "" {
		return templateCache.serverURL, templateCache.name, nil
	}
	serverURL, err = ServerURL(ctx)
	if err != nil {
		return "", "", err
	}
	digest, err := migrationsDigest()
	if err != nil {
		return "", "", err
	}
	name = "latchkey_tmpl_" + digest
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", "", fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(ctx)
	// Test processes of several packages race to build the same template.
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(hashtext('latchkey_testkit_template'))"); err != nil {
		return "", "", fmt.Errorf("lock: %w", err)
	}
	defer func() {
		_, _ = admin.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext('latchkey_testkit_template'))")
	}()
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", "", fmt.Errorf("look for template: %w", err)
	}
	if !exists {
		if err := buildTemplate(ctx, admin, serverURL, name); err != nil {
			return "", "", err
		}
	}
	templateCache.serverURL, templateCache.name = serverURL, name
	return serverURL, name, nil
}

// buildTemplate migrates a scratch database and renames it into place, so a
// half-built template is never cloned.
func buildTemplate(ctx context.Context, admin *pgx.Conn, serverURL, name string) error {
	scratch := name + "_build"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+scratch+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop scratch template: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+scratch); err != nil {
		return fmt.Errorf("create scratch template: %w", err)
	}
	pool, err := pgxpool.New(ctx, withDatabase(serverURL, scratch))
	if err != nil {
		return fmt.Errorf("open scratch template: %w", err)
	}
	_, err = migrate.Up(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", scratch, name)); err != nil {
		return fmt.Errorf("rename template: %w", err)
	}
	return nil
}

func migrationsDigest() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(schema.Migrations, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(schema.Migrations, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func withDatabase(serverURL, name string) string {
	base, query, _ := strings.Cut(serverURL, "?")
	i := strings.LastIndex(base, "/")
	if i < len("postgres://") {
		base += "/"
		i = len(base) - 1
	}
	url := base[:i+1] + name
	if query != "" {
		url += "?" + query
	}
	return url
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testkit: no go.mod above the working directory")
		}
		dir = parent
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
