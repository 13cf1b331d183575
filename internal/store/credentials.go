package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// UserByLoginName finds an account by login name, ignoring case.
func (s *Store) UserByLoginName(ctx context.Context, loginName string) (User, error) {
	row, err := s.q.GetUserByLoginName(ctx, s.pool, loginName)
	if err != nil {
		return User{}, translate("get user by login name", err)
	}
	return userFromRow(row.User, row.DomainName), nil
}

// UsersByIdentifier returns at most two accounts whose login name or email
// is identifier (ignoring case): enough to tell one from ambiguous.
func (s *Store) UsersByIdentifier(ctx context.Context, identifier string) ([]User, error) {
	rows, err := s.q.FindUsersByIdentifier(ctx, s.pool, identifier)
	if err != nil {
		return nil, translate("find users by identifier", err)
	}
	users := make([]User, len(rows))
	for i, r := range rows {
		users[i] = userFromRow(r.User, r.DomainName)
	}
	return users, nil
}

// UserWithDomain finds an account by id, with its domain's name.
func (s *Store) UserWithDomain(ctx context.Context, tx pgx.Tx, id uuid.UUID) (User, error) {
	row, err := s.q.GetUserWithDomain(ctx, s.on(tx), id)
	if err != nil {
		return User{}, translate("get user", err)
	}
	return userFromRow(row.User, row.DomainName), nil
}

// SetPassword stores a new password hash; it also clears the lockout, since
// whoever sets it proved control of the account another way.
func (s *Store) SetPassword(ctx context.Context, tx pgx.Tx, userID uuid.UUID, hash string, now time.Time) error {
	err := s.q.SetPasswordHash(ctx, s.on(tx), dbsqlc.SetPasswordHashParams{ID: userID, PasswordHash: &hash, Now: now})
	return translate("set password", err)
}

// RehashPassword swaps in a hash with current parameters, unless the
// password changed meanwhile.
func (s *Store) RehashPassword(ctx context.Context, userID uuid.UUID, oldHash, newHash string, now time.Time) error {
	err := s.q.UpdatePasswordHash(ctx, s.pool, dbsqlc.UpdatePasswordHashParams{ID: userID, PasswordHash: &newHash, OldHash: &oldHash, Now: now})
	return translate("rehash password", err)
}

// TokenInfo describes a live or just-consumed token.
type TokenInfo struct {
	ID        uuid.UUID
	UserID    uuid.UUID
	Purpose   string
	LoginName string
	ExpiresAt time.Time
}

// LiveToken finds a token that can still be used for one of purposes.
func (s *Store) LiveToken(ctx context.Context, hash []byte, purposes []string, now time.Time) (TokenInfo, error) {
	row, err := s.q.GetLiveToken(ctx, s.pool, dbsqlc.GetLiveTokenParams{TokenHash: hash, Purposes: purposes, Now: now})
	if err != nil {
		return TokenInfo{}, translate("get token", err)
	}
	return TokenInfo{ID: row.ID, UserID: row.UserID, Purpose: row.Purpose, LoginName: row.LoginName, ExpiresAt: row.ExpiresAt}, nil
}

// ConsumeToken marks a live token used, in tx; ErrNotFound when it is
// unknown, expired, used, revoked or of another purpose.
func (s *Store) ConsumeToken(ctx context.Context, tx pgx.Tx, hash []byte, purposes []string, now time.Time) (TokenInfo, error) {
	row, err := s.q.ConsumeToken(ctx, tx, dbsqlc.ConsumeTokenParams{TokenHash: hash, Purposes: purposes, Now: now})
	if err != nil {
		return TokenInfo{}, translate("consume token", err)
	}
	return TokenInfo{ID: row.ID, UserID: row.UserID, Purpose: row.Purpose}, nil
}

// RevokeUserTokens revokes the user's live tokens of the given purposes.
func (s *Store) RevokeUserTokens(ctx context.Context, tx pgx.Tx, userID uuid.UUID, purposes []string, now time.Time) error {
	err := s.q.RevokeLiveTokens(ctx, s.on(tx), dbsqlc.RevokeLiveTokensParams{UserID: userID, Purposes: purposes, Now: now})
	return translate("revoke tokens", err)
}

// Session is an authenticated session.
type Session struct {
	ID        uuid.UUID
	UserID    uuid.UUID
	ExpiresAt time.Time
}

// InsertSession stores the digest of a new session token.
func (s *Store) InsertSession(ctx context.Context, tx pgx.Tx, userID uuid.UUID, hash []byte, now, expiresAt time.Time) (uuid.UUID, error) {
	id, err := s.q.InsertSession(ctx, s.on(tx), dbsqlc.InsertSessionParams{UserID: userID, TokenHash: hash, Now: now, ExpiresAt: expiresAt})
	return id, translate("insert session", err)
}

// ActiveSession finds an unexpired, unrevoked session of an active user.
func (s *Store) ActiveSession(ctx context.Context, hash []byte, now time.Time) (Session, error) {
	row, err := s.q.GetActiveSession(ctx, s.pool, dbsqlc.GetActiveSessionParams{TokenHash: hash, Now: now})
	if err != nil {
		return Session{}, translate("get session", err)
	}
	return Session{ID: row.ID, UserID: row.UserID, ExpiresAt: row.ExpiresAt}, nil
}

// RevokeSession ends one session; false when it was not active.
func (s *Store) RevokeSession(ctx context.Context, hash []byte, now time.Time) (bool, error) {
	n, err := s.q.RevokeSessionByHash(ctx, s.pool, dbsqlc.RevokeSessionByHashParams{TokenHash: hash, Now: now})
	return n > 0, translate("revoke session", err)
}

// RevokeOtherSessions ends every session of the user but keep (nil: all).
func (s *Store) RevokeOtherSessions(ctx context.Context, tx pgx.Tx, userID uuid.UUID, keep *uuid.UUID, now time.Time) error {
	err := s.q.RevokeOtherSessions(ctx, s.on(tx), dbsqlc.RevokeOtherSessionsParams{UserID: userID, KeepID: keep, Now: now})
	return translate("revoke sessions", err)
}

// Delivery is one email the service decided to send.
type Delivery struct {
	ID             uuid.UUID
	IdempotencyKey string
	UserID         *uuid.UUID
	Template       string
	Locale         string
	Recipient      string
	Status         string
	Attempts       int
	LastError      string
	SMTPMessageID  string
	TokenPurpose   *string
	TokenTTL       time.Duration
	SourceEventID  string
	CreatedAt      time.Time
	SentAt         *time.Time
}

// NewDelivery is what InsertDelivery needs.
type NewDelivery struct {
	IdempotencyKey string
	UserID         uuid.UUID
	Template       string
	Locale         string
	Recipient      string
	TokenPurpose   string // empty: no token
	TokenTTL       time.Duration
	SourceEventID  string
	// Status is queued (the default), or skipped for a decision not to send
	// that a redelivery must find again.
	Status string
}

// InsertDelivery records the decision to send, once per idempotency key. It
// reports whether this call created it; otherwise it returns the existing one.
func (s *Store) InsertDelivery(ctx context.Context, tx pgx.Tx, d NewDelivery, now time.Time) (Delivery, bool, error) {
	status := d.Status
	if status == "" {
		status = "queued"
	}
	p := dbsqlc.InsertDeliveryParams{
		IdempotencyKey: d.IdempotencyKey, UserID: &d.UserID, Template: d.Template, Locale: d.Locale,
		Recipient: d.Recipient, Status: status, SourceEventID: d.SourceEventID, Now: now,
	}
	if d.TokenPurpose != "" {
		ttl := int32(d.TokenTTL / time.Second)
		p.TokenPurpose, p.TokenTtlSeconds = &d.TokenPurpose, &ttl
	}
	row, err := s.q.InsertDelivery(ctx, s.on(tx), p)
	if err == nil {
		return deliveryFromRow(row), true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, false, translate("insert delivery", err)
	}
	row, err = s.q.GetDeliveryByKey(ctx, s.on(tx), d.IdempotencyKey)
	if err != nil {
		return Delivery{}, false, translate("get delivery", err)
	}
	return deliveryFromRow(row), false, nil
}

// Decision is what DecideDelivery decided.
type Decision struct {
	ID      uuid.UUID
	Status  string // queued, or skipped when over the limit; for an existing delivery, its status
	Created bool
}

// Claimed is a delivery claimed for one attempt, with its user. Superseded
// reports that a newer delivery with a link of the same kind exists. Gone
// reports that its user no longer exists: the claim recorded it skipped,
// and User is empty.
type Claimed struct {
	Delivery   Delivery
	User       User
	Superseded bool
	Gone       bool
}

// ClaimDeliveries claims deliveries for one attempt each, in tx: queued
// ones, or ones whose previous claim is older than staleBefore (their
// worker's lease ran out). It first locks the deliveries' users in id order
// (FOR NO KEY UPDATE), the first lock of every credential change, so the
// tokens minted next in tx are ordered against a password reset, a disable
// or another mailer's claim for the same user, and the status read is the
// user's current one. A delivery whose user is gone is recorded skipped and
// returned with Gone. The others (being sent, finished, unknown) are
// neither changed nor returned.
func (s *Store) ClaimDeliveries(ctx context.Context, tx pgx.Tx, ids []uuid.UUID, now, staleBefore time.Time) (map[uuid.UUID]Claimed, error) {
	locked, err := s.q.LockUsersOfDeliveries(ctx, tx, ids)
	if err != nil {
		return nil, translate("lock users of deliveries", err)
	}
	users := make(map[uuid.UUID]User, len(locked))
	userIDs := make([]uuid.UUID, len(locked))
	for i, r := range locked {
		users[r.User.ID] = userFromRow(r.User, r.DomainName)
		userIDs[i] = r.User.ID
	}
	rows, err := s.q.ClaimDeliveries(ctx, tx, dbsqlc.ClaimDeliveriesParams{Ids: ids, UserIds: userIDs, Now: now, StaleBefore: staleBefore})
	if err != nil {
		return nil, translate("claim deliveries", err)
	}
	out := make(map[uuid.UUID]Claimed, len(rows))
	for _, row := range rows {
		d := Delivery{
			ID: row.ID, UserID: row.UserID, Template: row.Template, Locale: row.Locale, Recipient: row.Recipient,
			Status: row.Status, Attempts: int(row.Attempts), TokenPurpose: row.TokenPurpose, CreatedAt: row.CreatedAt,
		}
		if row.TokenTtlSeconds != nil {
			d.TokenTTL = time.Duration(*row.TokenTtlSeconds) * time.Second
		}
		c := Claimed{Delivery: d, Superseded: row.Superseded, Gone: row.Status != "sending"}
		if !c.Gone {
			c.User = users[*row.UserID]
		}
		out[row.ID] = c
	}
	return out, nil
}

// Claim names a delivery claimed by one attempt.
type Claim struct {
	ID      uuid.UUID
	Attempt int
}

// RenewClaims moves on, to now, the claim lease of the deliveries that are
// still claimed by the given attempts, and returns those. A delivery another
// worker is claiming at this moment is not waited for and not returned.
func (s *Store) RenewClaims(ctx context.Context, claims []Claim, now time.Time) (map[uuid.UUID]bool, error) {
	p := dbsqlc.RenewClaimsParams{Now: now}
	for _, c := range claims {
		p.Ids = append(p.Ids, c.ID)
		p.Attempts = append(p.Attempts, int32(c.Attempt))
	}
	ids, err := s.q.RenewClaims(ctx, s.pool, p)
	if err != nil {
		return nil, translate("renew delivery claims", err)
	}
	out := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// TokenGrant is a token to store for a delivery.
type TokenGrant struct {
	UserID     uuid.UUID
	Purpose    string
	Hash       []byte
	ExpiresAt  time.Time
	DeliveryID uuid.UUID
}

// IssueTokens revokes the live tokens of each grant's user and purpose and
// stores the new ones, in tx. At most one grant per user and purpose.
func (s *Store) IssueTokens(ctx context.Context, tx pgx.Tx, grants []TokenGrant, now time.Time) error {
	if len(grants) == 0 {
		return nil
	}
	var revoke dbsqlc.RevokeLiveTokensOfParams
	insert := dbsqlc.InsertTokensParams{Now: now}
	revoke.Now = now
	for _, g := range grants {
		revoke.UserIds = append(revoke.UserIds, g.UserID)
		revoke.Purposes = append(revoke.Purposes, g.Purpose)
		insert.UserIds = append(insert.UserIds, g.UserID)
		insert.Purposes = append(insert.Purposes, g.Purpose)
		insert.Hashes = append(insert.Hashes, g.Hash)
		insert.ExpiresAt = append(insert.ExpiresAt, g.ExpiresAt)
		insert.DeliveryIds = append(insert.DeliveryIds, g.DeliveryID)
	}
	if err := s.q.RevokeLiveTokensOf(ctx, tx, revoke); err != nil {
		return translate("revoke live tokens", err)
	}
	return translate("insert tokens", s.q.InsertTokens(ctx, tx, insert))
}

// Delivery finds a delivery by id.
func (s *Store) Delivery(ctx context.Context, id uuid.UUID) (Delivery, error) {
	row, err := s.q.GetDelivery(ctx, s.pool, id)
	if err != nil {
		return Delivery{}, translate("get delivery", err)
	}
	return deliveryFromRow(row), nil
}

// DeliveriesByUser lists a user's deliveries, newest first.
func (s *Store) DeliveriesByUser(ctx context.Context, userID uuid.UUID, limit int) ([]Delivery, error) {
	rows, err := s.q.ListDeliveriesByUser(ctx, s.pool, dbsqlc.ListDeliveriesByUserParams{UserID: &userID, MaxRows: int32(limit)})
	if err != nil {
		return nil, translate("list deliveries", err)
	}
	out := make([]Delivery, len(rows))
	for i, r := range rows {
		out[i] = deliveryFromRow(r)
	}
	return out, nil
}

func deliveryFromRow(r dbsqlc.MailDelivery) Delivery {
	d := Delivery{
		ID: r.ID, IdempotencyKey: r.IdempotencyKey, UserID: r.UserID, Template: r.Template, Locale: r.Locale,
		Recipient: r.Recipient, Status: r.Status, Attempts: int(r.Attempts), LastError: r.LastError,
		SMTPMessageID: r.SmtpMessageID, TokenPurpose: r.TokenPurpose, SourceEventID: r.SourceEventID,
		CreatedAt: r.CreatedAt, SentAt: r.SentAt,
	}
	if r.TokenTtlSeconds != nil {
		d.TokenTTL = time.Duration(*r.TokenTtlSeconds) * time.Second
	}
	return d
}

// OutboxEvent is an event waiting to be published.
type OutboxEvent struct {
	EventID string
	Subject string
	Payload []byte
}

// InsertOutbox queues an event in tx.
func (s *Store) InsertOutbox(ctx context.Context, tx pgx.Tx, e OutboxEvent) error {
	err := s.q.InsertOutbox(ctx, tx, dbsqlc.InsertOutboxParams{EventID: e.EventID, Subject: e.Subject, Payload: e.Payload})
	return translate("insert outbox", err)
}

// MarkOutboxPublished sets an event aside as if published: the relay no
// longer tries it, and PruneOutbox deletes it a day later.
func (s *Store) MarkOutboxPublished(ctx context.Context, tx pgx.Tx, eventID string) error {
	return translate("mark outbox published", s.q.MarkOutboxPublished(ctx, s.on(tx), eventID))
}

// DeleteOutbox removes events JetStream acknowledged.
func (s *Store) DeleteOutbox(ctx context.Context, tx pgx.Tx, eventIDs []string) error {
	if len(eventIDs) == 0 {
		return nil
	}
	return translate("delete outbox events", s.q.DeleteOutbox(ctx, s.on(tx), eventIDs))
}

// ClaimStaleOutbox locks, in tx, up to limit events left unpublished since
// before olderThan.
func (s *Store) ClaimStaleOutbox(ctx context.Context, tx pgx.Tx, olderThan time.Time, limit int) ([]OutboxEvent, error) {
	rows, err := s.q.ClaimStaleOutbox(ctx, tx, dbsqlc.ClaimStaleOutboxParams{OlderThan: olderThan, MaxRows: int32(limit)})
	if err != nil {
		return nil, translate("claim outbox", err)
	}
	out := make([]OutboxEvent, len(rows))
	for i, r := range rows {
		out[i] = OutboxEvent{EventID: r.EventID, Subject: r.Subject, Payload: r.Payload}
	}
	return out, nil
}

// PruneOutbox deletes events published before before.
func (s *Store) PruneOutbox(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.q.PruneOutbox(ctx, s.pool, &before)
	return n, translate("prune outbox", err)
}
