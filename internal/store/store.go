// Package store is Latchkey's PostgreSQL data layer. It owns the sqlc
// generated code and hands the rest of the program its own types, so the
// generated ones never leak out.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a uniqueness rule was broken; ConflictError says which.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable means the database could not be reached.
	ErrUnavailable = errors.New("database unavailable")
	// ErrInvalidInput means PostgreSQL refused a value as data (a NUL byte
	// in text, say): the caller's input, not the database, is at fault.
	ErrInvalidInput = errors.New("invalid input value")
)

// ConflictError names the unique constraint a write broke.
type ConflictError struct{ Constraint string }

func (e *ConflictError) Error() string { return "conflict on " + e.Constraint }
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Store runs queries on a connection pool.
type Store struct {
	pool *pgxpool.Pool
	q    *dbsqlc.Queries
}

// New wraps a pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: dbsqlc.New()}
}

// Open connects a pool of at most maxConns connections (0: pgx's default)
// and checks that the database answers.
func Open(ctx context.Context, databaseURL string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// The parse error can echo the URL, password included.
		return nil, errors.New("parse database URL: invalid connection string")
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.AfterConnect = registerTypes
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

// registerTypes teaches a connection google/uuid's UUID. Without it pgx
// encodes and decodes every one through its database/sql methods, as text
// formatted and parsed again: a tenth of the token worker's CPU went there.
func registerTypes(_ context.Context, conn *pgx.Conn) error {
	pgxuuid.Register(conn.TypeMap())
	return nil
}

// Pool is the underlying pool, for readiness checks and migrations.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// txAttempts is how often InTx runs a transaction PostgreSQL aborted as a
// deadlock victim or a serialization failure.
const txAttempts = 3

// InTx runs fn in one transaction, committed when fn returns nil. A failed
// begin or commit is translated like a failed query.
//
// A transaction PostgreSQL aborted to break a deadlock or a serialization
// conflict (SQLSTATE 40P01, 40001) did nothing, so it is run again, up to
// three times in all, after a pause of a few milliseconds: a client gets
// no 500 and a worker burns no attempt of its event for it. fn must
// therefore be safe to run again: no effect outside tx, and anything it
// fills for the caller reset at its start. Deadlocks should not happen at
// all, since every transaction that changes a user's credentials locks the
// user's row first, in id order (LockUser, LockUsersWithDomain,
// ClaimDeliveries); pg_stat_database.deadlocks counts those retried too.
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt == txAttempts || !retryable(err) {
			return translate("transaction", err)
		}
		select {
		case <-ctx.Done():
			return translate("transaction", err)
		case <-time.After(time.Duration(attempt) * (time.Millisecond + rand.N(5*time.Millisecond))):
		}
	}
}

// retryable reports a transaction PostgreSQL aborted so that another could
// go on: running it again may succeed.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// on runs a query in tx when there is one, else on the pool.
func (s *Store) on(tx pgx.Tx) dbsqlc.DBTX {
	if tx != nil {
		return tx
	}
	return s.pool
}

// translate maps driver errors to the package's errors. Errors that are
// already the package's (or the caller's own) pass through unchanged.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalidInput) {
		return err
	}
	// A deadline or a cancellation is the caller's, not an outage.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return fmt.Errorf("%s: %w", op, &ConflictError{Constraint: pgErr.ConstraintName})
		case pgErr.Code == "22021" || pgErr.Code == "22P05":
			// Invalid byte sequence (a NUL in text): the input's fault.
			return fmt.Errorf("%s: %w: %w", op, ErrInvalidInput, err)
		case strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03":
			// Connection failures, and the server shutting down or starting.
			return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	var connectErr *pgconn.ConnectError
	var opErr *net.OpError
	if errors.As(err, &connectErr) || errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
