// Package migrate applies the embedded schema migrations under a PostgreSQL
// advisory lock, so any number of processes may start at once.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/latchkey/latchkey/schema"
)

// ErrSchemaOutdated means the database lacks migrations this binary needs.
var ErrSchemaOutdated = errors.New("database schema is older than this binary: run `latchkey migrate`")

// Result reports what Up did.
type Result struct {
	From, To int64
	Applied  int
}

// Up applies every pending migration.
func Up(ctx context.Context, pool *pgxpool.Pool) (Result, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := newProvider(db, true)
	if err != nil {
		return Result{}, err
	}
	from, _, err := provider.GetVersions(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("read schema version: %w", err)
	}
	applied, err := provider.Up(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("apply migrations: %w", err)
	}
	to := from
	if n := len(applied); n > 0 {
		to = applied[n-1].Source.Version
	}
	return Result{From: from, To: to, Applied: len(applied)}, nil
}

// Check returns ErrSchemaOutdated when migrations are pending, so a service
// refuses to start on a schema it does not understand.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := newProvider(db, false)
	if err != nil {
		return err
	}
	current, target, err := provider.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current < target {
		return fmt.Errorf("%w (database at %d, binary needs %d)", ErrSchemaOutdated, current, target)
	}
	return nil
}

func newProvider(db *sql.DB, locked bool) (*goose.Provider, error) {
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if locked {
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, fmt.Errorf("create migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations, opts...)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return provider, nil
}

// DownTo rolls the schema back to version; for operators undoing a release.
func DownTo(ctx context.Context, pool *pgxpool.Pool, version int64) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := newProvider(db, true)
	if err != nil {
		return err
	}
	if _, err := provider.DownTo(ctx, version); err != nil {
		return fmt.Errorf("roll back migrations: %w", err)
	}
	return nil
}
