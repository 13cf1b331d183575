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
	token, hash, err := credential.NewToken()
	if err != nil {
		return Issued{}, fmt.Errorf("new session token: %w", err)
	}
	now := m.now()
	expires := now.Add(m.ttl)
	id, err := m.store.InsertSession(ctx, tx, userID, hash[:], now, expires)
	if err != nil {
		return Issued{}, err
	}
	return Issued{ID: id, Token: token, ExpiresAt: expires.UTC().Truncate(time.Second)}, nil
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
