// Package login authenticates a login name and secret and starts a session,
// with lockout after repeated failures.
package login

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// ErrInvalidCredentials is the same answer whatever was wrong, so it tells
// nobody whether the login name exists.
var ErrInvalidCredentials = problem.New(401, "invalid_credentials", "The login name or password is not correct.")

// LockedError says until when an account is locked.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string { return "account locked until " + e.Until.Format(time.RFC3339) }

// Problem is the 423 answer; Retry-After tells the client when to try again.
func (e *LockedError) Problem(now time.Time) *problem.Problem {
	p := problem.New(423, "account_locked", "Too many failed attempts: the account is locked for now. Try again later or reset your password.")
	p.RetryAfter = int(e.Until.Sub(now).Seconds()) + 1
	return p
}

// Config configures lockout.
type Config struct {
	LockoutThreshold int
	LockoutDuration  time.Duration
}

// Service logs users in.
type Service struct {
	cfg      Config
	store    *store.Store
	hasher   *credential.Hasher
	sessions *sessions.Manager
	now      func() time.Time
}

// New builds the service.
func New(cfg Config, st *store.Store, hasher *credential.Hasher, sm *sessions.Manager, now func() time.Time) *Service {
	return &Service{cfg: cfg, store: st, hasher: hasher, sessions: sm, now: now}
}

// Result is a successful login.
type Result struct {
	User    store.User
	Session sessions.Issued
}

// Login checks the password of a user who has one. Users without a password
// (PIN only) are refused here until the rollout flow lets them in with the
// PIN. An unknown login name costs one dummy verification, like a known one.
func (s *Service) Login(ctx context.Context, loginName, secret string, meta audit.Meta) (Result, error) {
	u, err := s.store.UserByLoginName(ctx, loginName)
	if errors.Is(err, store.ErrNotFound) {
		if err := s.hasher.VerifyDummy(ctx); err != nil {
			return Result{}, err
		}
		_ = audit.Record(ctx, s.store, nil, audit.LoginFailed, nil, nil, meta, map[string]any{"reason": "unknown_login"})
		return Result{}, ErrInvalidCredentials
	}
	if err != nil {
		return Result{}, err
	}
	now := s.now()
	if u.LockedUntil != nil && u.LockedUntil.After(now) {
		return Result{}, &LockedError{Until: *u.LockedUntil}
	}
	if u.Status != "active" || u.PasswordHash == nil {
		if err := s.hasher.VerifyDummy(ctx); err != nil {
			return Result{}, err
		}
		return Result{}, s.fail(ctx, u, meta, "no_password")
	}
	ok, rehash, err := s.hasher.Verify(ctx, *u.PasswordHash, secret)
	if err != nil {
		return Result{}, fmt.Errorf("verify password: %w", err)
	}
	if !ok {
		return Result{}, s.fail(ctx, u, meta, "wrong_password")
	}
	if rehash {
		s.rehash(ctx, u, secret)
	}
	if err := s.store.RecordLoginSuccess(ctx, u.ID); err != nil {
		return Result{}, err
	}
	issued, err := s.sessions.Create(ctx, nil, u.ID)
	if err != nil {
		return Result{}, err
	}
	if err := audit.Record(ctx, s.store, nil, audit.LoginSucceeded, &u.ID, &u.DomainID, meta, nil); err != nil {
		return Result{}, err
	}
	return Result{User: u, Session: issued}, nil
}

func (s *Service) fail(ctx context.Context, u store.User, meta audit.Meta, reason string) error {
	now := s.now()
	until := now.Add(s.cfg.LockoutDuration)
	f, err := s.store.RecordLoginFailure(ctx, u.ID, s.cfg.LockoutThreshold, until, now)
	if err != nil {
		return err
	}
	if err := audit.Record(ctx, s.store, nil, audit.LoginFailed, &u.ID, &u.DomainID, meta,
		map[string]any{"reason": reason, "failures": f.Failures}); err != nil {
		return err
	}
	if f.JustLocked {
		if err := audit.Record(ctx, s.store, nil, audit.AccountLocked, &u.ID, &u.DomainID, meta,
			map[string]any{"until": until.UTC()}); err != nil {
			return err
		}
	}
	return ErrInvalidCredentials
}

// rehash upgrades a hash made with old parameters; failing to is not worth
// failing the login for.
func (s *Service) rehash(ctx context.Context, u store.User, secret string) {
	phc, err := s.hasher.Hash(ctx, secret)
	if err == nil {
		err = s.store.RehashPassword(ctx, u.ID, *u.PasswordHash, phc, s.now())
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("rehash password")
	}
}
