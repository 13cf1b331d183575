package store

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// AdminKey is an admin API credential; DomainID limits it to one tenant.
type AdminKey struct {
	ID        uuid.UUID
	Name      string
	DomainID  *uuid.UUID
	CreatedAt time.Time
	Revoked   bool
}

// CreateAdminKey stores the SHA-256 of a new key.
func (s *Store) CreateAdminKey(ctx context.Context, name string, domainID *uuid.UUID, keyHash []byte) (AdminKey, error) {
	row, err := s.q.CreateAdminKey(ctx, s.pool, dbsqlc.CreateAdminKeyParams{Name: name, DomainID: domainID, KeyHash: keyHash})
	if err != nil {
		return AdminKey{}, translate("create admin key", err)
	}
	return AdminKey{ID: row.ID, Name: row.Name, DomainID: row.DomainID, CreatedAt: row.CreatedAt}, nil
}

// AdminKeyByHash finds a key by the SHA-256 of its secret.
func (s *Store) AdminKeyByHash(ctx context.Context, keyHash []byte) (AdminKey, error) {
	row, err := s.q.GetAdminKeyByHash(ctx, s.pool, keyHash)
	if err != nil {
		return AdminKey{}, translate("get admin key", err)
	}
	return AdminKey{ID: row.ID, Name: row.Name, DomainID: row.DomainID, Revoked: row.RevokedAt != nil}, nil
}

// DeadLetter is an event a worker gave up on.
type DeadLetter struct {
	ID             uuid.UUID
	Consumer       string
	StreamSequence uint64
	EventID        string
	EventType      string
	Subject        string
	Payload        []byte
	Reason         string
	Attempts       int
	CreatedAt      time.Time
	ReplayedAt     *time.Time
}

// InsertDeadLetter records a dead letter once per consumer and stream sequence.
func (s *Store) InsertDeadLetter(ctx context.Context, d DeadLetter) error {
	err := s.q.InsertDeadLetter(ctx, s.pool, dbsqlc.InsertDeadLetterParams{
		Consumer:       d.Consumer,
		StreamSequence: int64(d.StreamSequence),
		EventID:        d.EventID,
		EventType:      d.EventType,
		Subject:        d.Subject,
		Payload:        d.Payload,
		Reason:         d.Reason,
		Attempts:       int32(d.Attempts),
	})
	return translate("insert dead letter", err)
}

// ListDeadLetters pages through dead letters, newest first.
func (s *Store) ListDeadLetters(ctx context.Context, before *time.Time, limit int) ([]DeadLetter, error) {
	rows, err := s.q.ListDeadLetters(ctx, s.pool, dbsqlc.ListDeadLettersParams{Before: before, MaxRows: int32(limit)})
	if err != nil {
		return nil, translate("list dead letters", err)
	}
	out := make([]DeadLetter, len(rows))
	for i, r := range rows {
		out[i] = DeadLetter{
			ID: r.ID, Consumer: r.Consumer, StreamSequence: uint64(r.StreamSequence), EventID: r.EventID,
			EventType: r.EventType, Subject: r.Subject, Reason: r.Reason, Attempts: int(r.Attempts),
			CreatedAt: r.CreatedAt, ReplayedAt: r.ReplayedAt,
		}
	}
	return out, nil
}

// AuditEvent is one credential event for the audit trail. It never carries a
// token or a secret.
type AuditEvent struct {
	Kind       string
	UserID     *uuid.UUID
	DomainID   *uuid.UUID
	ActorKind  string
	ActorID    string
	SourceAddr string
	RequestID  string
	Detail     []byte // JSON object; nil means {}
}
