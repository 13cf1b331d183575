// Package sessions issues and checks the opaque bearer sessions that every
// login-like flow returns. Only the SHA-256 of a session token is stored.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/store"
)

// ErrInvalid means the bearer token is unknown, expired or revoked.
var ErrInvalid = errors.New("invalid or expired session")

// Issued is a new session as the client receives it.
type Issued struct {
	ID        uuid.UUID `json:"-"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Manager creates, checks and ends sessions.
type Manager struct {
	store *store.Store
	ttl   time.Duration
	now   func() time.Time
}

// New builds a manager.
func New(st *store.Store, ttl time.Duration, now func() time.Time) *Manager {
	return &Manager{store: st, ttl: ttl, now: now}
}

// Create starts a session for the user, in tx when given.
func (m *Manager) Create(ctx context.Context, tx pgx.Tx, userID uuid.UUID) (Issued, error) {
	issued, row, err := m.Prepare()
	if err != nil {
		return Issued{}, err
	}
	if issued.ID, err = m.store.InsertSession(ctx, tx, userID, row.TokenHash, row.CreatedAt, row.ExpiresAt); err != nil {
		return Issued{}, err
	}
	return issued, nil
}

// Prepare makes a session's bearer token and lifetime for a caller that
// stores the session itself, in a statement of its own (login starts it only
// if the credential it verified is still current: store.CompleteLogin). The
// caller sets Issued.ID to the stored session's id.
func (m *Manager) Prepare() (Issued, store.NewSession, error) {
	token, hash, err := credential.NewToken()
	if err != nil {
		return Issued{}, store.NewSession{}, fmt.Errorf("new session token: %w", err)
	}
	now := m.now()
	expires := now.Add(m.ttl)
	return Issued{Token: token, ExpiresAt: expires.UTC().Truncate(time.Second)},
		store.NewSession{TokenHash: hash[:], CreatedAt: now, ExpiresAt: expires}, nil
}

// Authenticate resolves a bearer token.
func (m *Manager) Authenticate(ctx context.Context, token string) (store.Session, error) {
	if token == "" || len(token) > 128 {
		return store.Session{}, ErrInvalid
	}
	hash := credential.HashToken(token)
	s, err := m.store.ActiveSession(ctx, hash[:], m.now())
	if errors.Is(err, store.ErrNotFound) {
		return store.Session{}, ErrInvalid
	}
	return s, err
}

// End revokes the session; ending an ended session is not an error.
func (m *Manager) End(ctx context.Context, token string) error {
	hash := credential.HashToken(token)
	_, err := m.store.RevokeSession(ctx, hash[:], m.now())
	return err
}

// EndOthers revokes every session of the user except keep (nil: all), in tx.
func (m *Manager) EndOthers(ctx context.Context, tx pgx.Tx, userID uuid.UUID, keep *uuid.UUID) error {
	return m.store.RevokeOtherSessions(ctx, tx, userID, keep, m.now())
}
