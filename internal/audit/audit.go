// Package audit records credential events: who asked for, sent, consumed,
// failed, changed or locked what, when and from where. It never records a
// token or a secret.
package audit

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store"
)

// Kinds of audit events.
const (
	ResetRequested  = "reset.requested"
	ResetSuppressed = "reset.suppressed"
	ResetUnresolved = "reset.unresolved"
	AccountUnlocked = "account.unlocked"
	MailSent        = "mail.sent"
	MailFailed      = "mail.failed"
	TokenConsumed   = "token.consumed"
	TokenRejected   = "token.rejected"
	PasswordChanged = "password.changed"
	LoginSucceeded  = "login.succeeded"
	LoginFailed     = "login.failed"
	AccountLocked   = "account.locked"
	AccountDisabled = "account.disabled"
	AccountEnabled  = "account.enabled"
	// AccountUpdated: an admin changed a user's profile; the detail names
	// the fields ("fields") and whether links were revoked, never values.
	AccountUpdated = "account.updated"
	SessionEnded   = "session.ended"
)

// Actor kinds.
const (
	ActorSelf      = "self"
	ActorAdmin     = "admin"
	ActorScheduler = "scheduler"
	ActorLegacy    = "legacy"
	ActorSystem    = "system"
)

// Meta says who acted and from where; it travels in events so a worker can
// attribute what it does to the original request.
type Meta struct {
	ActorKind  string `json:"actor_kind"`
	ActorID    string `json:"actor_id,omitempty"`
	SourceAddr string `json:"source_addr,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
}

// Record appends one event, in tx when given.
func Record(ctx context.Context, st *store.Store, tx pgx.Tx, kind string, userID, domainID *uuid.UUID, meta Meta, detail map[string]any) error {
	return st.InsertAudits(ctx, tx, []store.AuditEvent{Event(kind, userID, domainID, meta, detail)})
}

// Event builds an audit event, for callers that record several at once
// (store.InsertAudits).
func Event(kind string, userID, domainID *uuid.UUID, meta Meta, detail map[string]any) store.AuditEvent {
	var raw []byte
	if len(detail) > 0 {
		// A map of plain values always marshals.
		raw, _ = json.Marshal(detail)
	}
	actor := meta.ActorKind
	if actor == "" {
		actor = ActorSystem
	}
	return store.AuditEvent{
		Kind: kind, UserID: userID, DomainID: domainID, ActorKind: actor, ActorID: meta.ActorID,
		SourceAddr: meta.SourceAddr, RequestID: meta.RequestID, Detail: raw,
	}
}
