package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// LockUsersWithDomain reads the users and locks their rows until tx ends, in
// id order and FOR NO KEY UPDATE like LockUser: the first lock of every
// change to a user's credentials, so concurrent batches and roles cannot
// deadlock. Unknown ids are absent.
func (s *Store) LockUsersWithDomain(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (map[uuid.UUID]User, error) {
	rows, err := s.q.LockUsersWithDomain(ctx, tx, ids)
	if err != nil {
		return nil, translate("lock users", err)
	}
	users := make(map[uuid.UUID]User, len(rows))
	for _, r := range rows {
		users[r.User.ID] = userFromRow(r.User, r.DomainName)
	}
	return users, nil
}

// UnlockUsers clears the locks of those users that are locked and returns them.
func (s *Store) UnlockUsers(ctx context.Context, tx pgx.Tx, ids []uuid.UUID, now time.Time) ([]uuid.UUID, error) {
	unlocked, err := s.q.UnlockUsers(ctx, tx, dbsqlc.UnlockUsersParams{Ids: ids, Now: now})
	return unlocked, translate("unlock users", err)
}

// DeliveriesByKeys finds the deliveries recorded under idempotency keys.
func (s *Store) DeliveriesByKeys(ctx context.Context, tx pgx.Tx, keys []string) (map[string]Decision, error) {
	rows, err := s.q.DeliveriesByKeys(ctx, tx, keys)
	if err != nil {
		return nil, translate("get deliveries", err)
	}
	out := make(map[string]Decision, len(rows))
	for _, r := range rows {
		out[r.IdempotencyKey] = Decision{ID: r.ID, Status: r.Status}
	}
	return out, nil
}

// RecentDeliveryCounts counts, per user, the deliveries of template since
// since that were not skipped.
func (s *Store) RecentDeliveryCounts(ctx context.Context, tx pgx.Tx, userIDs []uuid.UUID, template string, since time.Time) (map[uuid.UUID]int, error) {
	rows, err := s.q.RecentDeliveryCounts(ctx, tx, dbsqlc.RecentDeliveryCountsParams{UserIds: userIDs, Template: template, Since: since})
	if err != nil {
		return nil, translate("count deliveries", err)
	}
	out := make(map[uuid.UUID]int, len(rows))
	for _, r := range rows {
		if r.UserID != nil {
			out[*r.UserID] = int(r.N)
		}
	}
	return out, nil
}

// InsertDeliveries records several deliveries of one template (and token
// grant) in one statement, returning their ids by idempotency key.
func (s *Store) InsertDeliveries(ctx context.Context, tx pgx.Tx, template, tokenPurpose string, tokenTTL time.Duration, ds []NewDelivery, now time.Time) (map[string]uuid.UUID, error) {
	p := dbsqlc.InsertDeliveriesParams{Template: template, Now: now}
	if tokenPurpose != "" {
		ttl := int32(tokenTTL / time.Second)
		p.TokenPurpose, p.TokenTtlSeconds = &tokenPurpose, &ttl
	}
	for _, d := range ds {
		status := d.Status
		if status == "" {
			status = "queued"
		}
		p.Keys = append(p.Keys, d.IdempotencyKey)
		p.UserIds = append(p.UserIds, d.UserID)
		p.Locales = append(p.Locales, d.Locale)
		p.Recipients = append(p.Recipients, d.Recipient)
		p.Statuses = append(p.Statuses, status)
		p.SourceEventIds = append(p.SourceEventIds, d.SourceEventID)
	}
	rows, err := s.q.InsertDeliveries(ctx, tx, p)
	if err != nil {
		return nil, translate("insert deliveries", err)
	}
	out := make(map[string]uuid.UUID, len(rows))
	for _, r := range rows {
		out[r.IdempotencyKey] = r.ID
	}
	return out, nil
}

// InsertAudits appends several audit events in one statement.
func (s *Store) InsertAudits(ctx context.Context, tx pgx.Tx, es []AuditEvent) error {
	if len(es) == 0 {
		return nil
	}
	var p dbsqlc.InsertAuditEventsParams
	for _, e := range es {
		p.Kinds = append(p.Kinds, e.Kind)
		p.UserIds = append(p.UserIds, deref(e.UserID))
		p.DomainIds = append(p.DomainIds, deref(e.DomainID))
		p.ActorKinds = append(p.ActorKinds, e.ActorKind)
		p.ActorIds = append(p.ActorIds, e.ActorID)
		p.SourceAddrs = append(p.SourceAddrs, e.SourceAddr)
		p.RequestIds = append(p.RequestIds, e.RequestID)
		detail := string(e.Detail)
		if detail == "" {
			detail = "{}"
		}
		p.Details = append(p.Details, detail)
	}
	return translate("insert audit events", s.q.InsertAuditEvents(ctx, s.on(tx), p))
}

func deref(id *uuid.UUID) uuid.UUID {
	if id == nil {
		return uuid.Nil
	}
	return *id
}

// Outcome is the result of one delivery attempt, for FinishDeliveries.
type Outcome struct {
	ID        uuid.UUID
	Attempt   int
	Status    string // queued (will retry), sent, failed or skipped
	LastError string
	MessageID string
	AuditKind string // "" for none
	DomainID  *uuid.UUID
	// Event, when set, is queued in the outbox with the outcome.
	Event *OutboxEvent
}

// FinishDeliveries records a batch of outcomes, their audit events and
// their outbox events in one statement, and returns the ids of those
// recorded. Each is fenced by its attempt: a worker whose claim was taken
// over writes nothing for that delivery.
func (s *Store) FinishDeliveries(ctx context.Context, outcomes []Outcome, now time.Time) (map[uuid.UUID]bool, error) {
	if len(outcomes) == 0 {
		return nil, nil
	}
	p := dbsqlc.FinishDeliveriesParams{Now: now}
	for _, o := range outcomes {
		p.Ids = append(p.Ids, o.ID)
		p.Attempts = append(p.Attempts, int32(o.Attempt))
		p.Statuses = append(p.Statuses, o.Status)
		p.LastErrors = append(p.LastErrors, o.LastError)
		p.MessageIds = append(p.MessageIds, o.MessageID)
		p.AuditKinds = append(p.AuditKinds, o.AuditKind)
		p.DomainIds = append(p.DomainIds, deref(o.DomainID))
		e := o.Event
		if e == nil {
			e = &OutboxEvent{Payload: []byte{}}
		}
		p.EventIds = append(p.EventIds, e.EventID)
		p.EventSubjects = append(p.EventSubjects, e.Subject)
		p.EventPayloads = append(p.EventPayloads, e.Payload)
	}
	ids, err := s.q.FinishDeliveries(ctx, s.pool, p)
	if err != nil {
		return nil, translate("finish deliveries", err)
	}
	recorded := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		recorded[id] = true
	}
	return recorded, nil
}

// RevokeTokensOfDeliveries revokes, in tx, the tokens minted for deliveries
// that failed: their links never reached anyone. The caller holds the
// users' row locks (LockUsersWithDomain): users first, then their tokens.
func (s *Store) RevokeTokensOfDeliveries(ctx context.Context, tx pgx.Tx, ids []uuid.UUID, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.q.RevokeTokensOfDeliveries(ctx, tx, dbsqlc.RevokeTokensOfDeliveriesParams{DeliveryIds: ids, Now: now})
	return translate("revoke delivery tokens", err)
}
