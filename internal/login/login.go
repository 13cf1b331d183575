// Package login authenticates a login name and secret and starts a session,
// with lockout after repeated failures.
//
// Two rules keep it correct under concurrency. An attempt is admitted to the
// slow argon2id verification only by a row-locked write that counts it as a
// failure until it is proven right (store.AdmitLoginAttempt): at most
// LockoutThreshold verifications per lock, whatever the number of requests in
// flight. And a verified attempt starts its session only while the credential
// it verified is still the account's (store.CompleteLogin, in the session's
// transaction): a password changed, or an account disabled, during the
// verification opens nothing.
package login

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// ErrInvalidCredentials is the same answer whatever was wrong, so it tells
// nobody whether the login name exists.
var ErrInvalidCredentials = problem.New(401, "invalid_credentials", "The login name or password is not correct.")

// LockedError says until when an account (or an unknown login name, which
// locks alike) refuses every attempt.
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
	// LockoutThreshold attempts not proven right, each within
	// LockoutDuration of the previous, lock the account for LockoutDuration.
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
	UserID    uuid.UUID
	LoginName string
	Session   sessions.Issued
}

func (s *Service) rule() store.Lockout {
	return store.Lockout{Threshold: s.cfg.LockoutThreshold, Duration: s.cfg.LockoutDuration}
}

// Login checks the password of a user who has one and starts a session.
// Errors: ErrInvalidCredentials (401) whatever was wrong, *LockedError (423)
// when the account or the unknown name is locked, or an infrastructure
// error. A login name that belongs to no account costs one dummy
// verification and one counted failure, like a wrong password, and locks
// alike. Users without a password (PIN only) are refused here until the
// rollout flow lets them in with the PIN.
func (s *Service) Login(ctx context.Context, loginName, secret string, meta audit.Meta) (Result, error) {
	name, ok := identifier.LoginName(loginName)
	if !ok || !credential.PlausibleSecret(secret) {
		// No account has such a name, and no policy accepts such a secret:
		// answering at once tells nothing about any account.
		return Result{}, ErrInvalidCredentials
	}
	adm, err := s.store.AdmitLoginAttempt(ctx, name, s.rule(), s.now())
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, s.unknown(ctx, name, meta)
	}
	if err != nil {
		return Result{}, lockedOr(err)
	}
	var verifier *string
	reason := "wrong_password"
	switch {
	case adm.Status != "active":
		reason = "disabled"
	case adm.PasswordHash == nil:
		reason = "no_password"
	default:
		verifier = adm.PasswordHash
	}
	ok, rehash, err := s.verify(ctx, adm.UserID, verifier, secret)
	if errors.Is(err, credential.ErrMalformedHash) {
		ok, reason = false, "unusable_hash"
	} else if err != nil {
		return Result{}, err
	}
	if !ok {
		return Result{}, s.fail(ctx, adm, meta, reason)
	}

	issued, session, err := s.sessions.Prepare()
	if err != nil {
		return Result{}, err
	}
	issued.ID, err = s.store.CompleteLogin(ctx, nil, adm.UserID, adm.CredentialVersion, session,
		audit.Event(audit.LoginSucceeded, &adm.UserID, &adm.DomainID, meta, nil))
	if errors.Is(err, store.ErrCredentialChanged) {
		// The secret verified is no longer the account's (or the account
		// was disabled): the same answer as a wrong one.
		return Result{}, s.fail(ctx, adm, meta, "credential_changed")
	}
	if err != nil {
		return Result{}, err
	}
	if rehash {
		s.rehash(ctx, adm.UserID, *verifier, secret)
	}
	return Result{UserID: adm.UserID, LoginName: adm.LoginName, Session: issued}, nil
}

// unknown answers an attempt on a login name that belongs to nobody exactly
// as a wrong password would be answered: one admitted (counted) attempt, one
// verification's cost, 401, and 423 once the name has been tried too often.
func (s *Service) unknown(ctx context.Context, name string, meta audit.Meta) error {
	if _, err := s.store.AdmitUnknownLoginAttempt(ctx, name, s.rule(), s.now()); err != nil {
		return lockedOr(err)
	}
	if err := s.hasher.VerifyDummy(ctx); err != nil {
		return err
	}
	if err := audit.Record(ctx, s.store, nil, audit.LoginFailed, nil, nil, meta, map[string]any{"reason": "unknown_login"}); err != nil {
		return err
	}
	return ErrInvalidCredentials
}

// verify checks secret against the stored PHC string, or costs a dummy
// verification when there is none. A stored string the hasher cannot check
// (corrupt, or parameters out of bounds) costs the same, is logged for the
// operator (the error names the fault, never the stored text) and is
// returned as an error wrapping credential.ErrMalformedHash, which fails the
// login like a wrong secret instead of answering 500.
func (s *Service) verify(ctx context.Context, userID uuid.UUID, stored *string, secret string) (ok, rehash bool, err error) {
	if stored == nil {
		return false, false, s.hasher.VerifyDummy(ctx)
	}
	ok, rehash, err = s.hasher.Verify(ctx, *stored, secret)
	if errors.Is(err, credential.ErrMalformedHash) {
		zerolog.Ctx(ctx).Error().Err(err).Str("user_id", userID.String()).
			Msg("stored password hash cannot be verified; the login fails until the password is reset")
		return false, false, err
	}
	if err != nil {
		return false, false, fmt.Errorf("verify password: %w", err)
	}
	return ok, rehash, nil
}

// fail records a failed attempt; the attempt was counted when it was
// admitted, and the one that used the last of the allowance has locked the
// account.
func (s *Service) fail(ctx context.Context, adm store.Admission, meta audit.Meta, reason string) error {
	events := []store.AuditEvent{audit.Event(audit.LoginFailed, &adm.UserID, &adm.DomainID, meta,
		map[string]any{"reason": reason, "failures": adm.Failures})}
	if adm.Locks {
		events = append(events, audit.Event(audit.AccountLocked, &adm.UserID, &adm.DomainID, meta,
			map[string]any{"duration_seconds": int(s.cfg.LockoutDuration.Seconds())}))
	}
	if err := s.store.InsertAudits(ctx, nil, events); err != nil {
		return err
	}
	return ErrInvalidCredentials
}

func lockedOr(err error) error {
	var locked *store.LockedError
	if errors.As(err, &locked) {
		return &LockedError{Until: locked.Until}
	}
	return err
}

// rehash upgrades a hash made with old parameters; failing to is not worth
// failing the login for.
func (s *Service) rehash(ctx context.Context, userID uuid.UUID, oldHash, secret string) {
	phc, err := s.hasher.Hash(ctx, secret)
	if err == nil {
		err = s.store.RehashPassword(ctx, userID, oldHash, phc, s.now())
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("rehash password")
	}
}
