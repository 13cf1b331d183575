// Package recovery is the forgot-password flow: a request resolves to an
// account, the tokens worker decides to send a reset link, and the link's
// token, consumed once, sets the new password and logs the user in.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/delivery"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/mailtmpl"
	"github.com/latchkey/latchkey/internal/outbox"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// Token purposes this flow mints and accepts.
const (
	PurposeReset = "reset"
)

// Messages of the flow (SPEC §5.1).
const (
	MsgRequestProcessed = "Your request has been processed. Please check your email!"
	MsgAccountNotFound  = "Username or email does not exist. Please enter a valid one."
	MsgAccountAmbiguous = "This email address belongs to several accounts. Please contact your administrator."
	MsgLinkExpired      = "Link expired, you have to repeat the activation process."
	MsgPasswordChanged  = "The password has been changed."
)

var (
	// ErrAccountNotFound: no account has this login name or email.
	ErrAccountNotFound = problem.New(404, "account_not_found", MsgAccountNotFound)
	// ErrAccountAmbiguous: the email belongs to accounts in several domains.
	ErrAccountAmbiguous = problem.New(409, "account_ambiguous", MsgAccountAmbiguous)
	// ErrLinkExpired: the token is unknown, expired, used or revoked.
	ErrLinkExpired = problem.New(410, "link_expired", MsgLinkExpired)
)

// Config configures the flow.
type Config struct {
	Disclosure          config.Disclosure
	ResetTTL            time.Duration
	RateLimitPerAccount config.Rate
	UnlockOnReset       bool
	LoginAfterReset     bool
}

// Service runs the flow.
type Service struct {
	cfg       Config
	store     *store.Store
	publisher *events.Publisher
	requester *delivery.Requester
	outbox    *outbox.Outbox
	hasher    *credential.Hasher
	policy    *credential.Policy
	sessions  *sessions.Manager
	now       func() time.Time
}

// New builds the service.
func New(cfg Config, st *store.Store, pub *events.Publisher, req *delivery.Requester, ob *outbox.Outbox,
	hasher *credential.Hasher, policy *credential.Policy, sm *sessions.Manager, now func() time.Time) *Service {
	return &Service{cfg: cfg, store: st, publisher: pub, requester: req, outbox: ob, hasher: hasher, policy: policy,
		sessions: sm, now: now}
}

// ResetRequested is the data of a reset.requested event. A portal backend may
// publish it itself: exactly one of UserID and Identifier (a login name or an
// email) is set.
type ResetRequested struct {
	UserID     *uuid.UUID `json:"user_id,omitempty"`
	Identifier string     `json:"identifier,omitempty"`
	audit.Meta
}

// PasswordChanged is the data of a password.changed event.
type PasswordChanged struct {
	UserID    uuid.UUID `json:"user_id"`
	ChangedAt time.Time `json:"changed_at"`
	Via       string    `json:"via"`
	audit.Meta
}

// Resolve finds the one account an identifier (already canonical, see
// identifier.Recovery) names: its login name, or its email. An identifier
// that names two accounts — an email shared across domains, or one account's
// login name that is another's email — is ErrAccountAmbiguous, never resolved
// to either: a tenant must not capture another's users by choosing a login
// name that is their email.
func (s *Service) Resolve(ctx context.Context, identifier string) (store.User, error) {
	users, err := s.store.UsersByIdentifier(ctx, identifier)
	if err != nil {
		return store.User{}, err
	}
	switch len(users) {
	case 0:
		return store.User{}, ErrAccountNotFound
	case 1:
		return users[0], nil
	default:
		return store.User{}, ErrAccountAmbiguous
	}
}

// Forgot handles POST /v1/password/forgot for an identifier already checked
// by identifier.Recovery. In explicit mode it says when the account is unknown or
// ambiguous; in uniform mode it does no lookup at all, so known and unknown
// identifiers cost the same, and the worker resolves the identifier. allow
// applies the per-account rate limit to the account's (or identifier's) key.
func (s *Service) Forgot(ctx context.Context, identifier string, meta audit.Meta, allow func(accountKey string) error) error {
	data := ResetRequested{Meta: meta}
	key := "id:" + strings.ToLower(identifier)
	if s.cfg.Disclosure == config.DisclosureExplicit {
		u, err := s.Resolve(ctx, identifier)
		if err != nil {
			return err
		}
		data.UserID, key = &u.ID, "user:"+u.ID.String()
	} else {
		data.Identifier = identifier
	}
	if err := allow(key); err != nil {
		return err
	}
	return s.publish(ctx, data)
}

// AdminReset handles POST /v1/admin/users/{id}/password-reset: store.ErrNotFound
// for a user unknown or outside domainScope, accounts.ErrAccountDisabled
// (409) for a disabled one.
func (s *Service) AdminReset(ctx context.Context, domainScope *uuid.UUID, userID uuid.UUID, meta audit.Meta) error {
	u, err := s.store.UserWithDomain(ctx, nil, userID)
	if err != nil {
		return err
	}
	if domainScope != nil && *domainScope != u.DomainID {
		return store.ErrNotFound // a scoped key must not learn that the user exists
	}
	if u.Status != accounts.StatusActive {
		return accounts.ErrAccountDisabled
	}
	return s.publish(ctx, ResetRequested{UserID: &u.ID, Meta: meta})
}

func (s *Service) publish(ctx context.Context, data ResetRequested) error {
	e, err := events.New(delivery.Source, events.TypeResetRequested, "", data, s.now())
	if err != nil {
		return err
	}
	// Under an Idempotency-Key, a retry publishes the same event.
	if id, ok := events.DerivedID(ctx, e.Type); ok {
		e.ID = id
	}
	_, err = s.publisher.Publish(ctx, e)
	return err
}

// HandleResetRequested is the tokens worker's handler, for a batch of
// reset.requested events: it resolves the accounts, applies the per-account
// limit and the unlock-on-reset rule, and records one delivery of the reset
// email per event, all in one transaction, then asks the mailer to send
// them. A redelivered event finds its delivery and only re-publishes.
func (s *Service) HandleResetRequested(ctx context.Context, items []events.Item) []error {
	errs := make([]error, len(items))
	type request struct {
		item    int
		userID  uuid.UUID
		key     string
		eventID string
		meta    audit.Meta
	}
	var reqs []request
	for i, it := range items {
		var data ResetRequested
		if err := it.Event.DecodeData(&data); err != nil {
			errs[i] = err
			continue
		}
		if (data.UserID == nil) == (data.Identifier == "") {
			errs[i] = events.Permanent(errors.New("reset.requested needs exactly one of user_id and identifier"))
			continue
		}
		if data.UserID == nil {
			name, ok := identifier.Recovery(data.Identifier)
			if !ok {
				// A backend published something no account can be named by.
				errs[i] = s.unresolved(ctx, ErrAccountNotFound, data.Meta)
				continue
			}
			u, err := s.Resolve(ctx, name)
			if err != nil {
				errs[i] = s.unresolved(ctx, err, data.Meta)
				continue
			}
			data.UserID = &u.ID
		}
		reqs = append(reqs, request{item: i, userID: *data.UserID, key: "reset:" + it.Event.ID, eventID: it.Event.ID, meta: data.Meta})
	}
	if len(reqs) == 0 {
		return errs
	}

	toPublish := make([]uuid.UUID, len(reqs)) // uuid.Nil: nothing to send
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		clear(toPublish) // afresh if the transaction is run again
		ids := make([]uuid.UUID, 0, len(reqs))
		keys := make([]string, 0, len(reqs))
		for _, r := range reqs {
			ids = append(ids, r.userID)
			keys = append(keys, r.key)
		}
		// The users' row locks serialise the decisions about each user
		// across worker processes: the counts below see every decision made
		// before them. Taken first and in id order, like every change of a
		// user's credentials (the mailer's claim, a reset, a disable), so no
		// two of them deadlock.
		users, err := s.store.LockUsersWithDomain(ctx, tx, ids)
		if err != nil {
			return err
		}
		existing, err := s.store.DeliveriesByKeys(ctx, tx, keys)
		if err != nil {
			return err
		}
		now := s.now()
		counts, err := s.store.RecentDeliveryCounts(ctx, tx, ids, mailtmpl.PasswordReset, now.Add(-s.cfg.RateLimitPerAccount.Window))
		if err != nil {
			return err
		}
		// Decide in event order, so several requests for one user in a batch
		// count against its limit one after another. Only a user's newest
		// link is valid, so a later request in the batch supersedes an
		// earlier queued one: that email would arrive with a dead link.
		var fresh []store.NewDelivery
		var audits []store.AuditEvent
		lastQueued := map[uuid.UUID]int{} // user → index in fresh
		for _, r := range reqs {
			u, ok := users[r.userID]
			if !ok || u.Status != "active" {
				audits = append(audits, audit.Event(audit.ResetUnresolved, nil, nil, r.meta, nil))
				continue
			}
			if _, seen := existing[r.key]; seen {
				continue // a redelivered event: only publish again
			}
			status := "queued"
			if counts[u.ID] >= s.cfg.RateLimitPerAccount.Count {
				status = "skipped"
				audits = append(audits, audit.Event(audit.ResetSuppressed, &u.ID, &u.DomainID, r.meta,
					map[string]any{"event_id": r.eventID, "reason": "rate_limit"}))
			} else {
				counts[u.ID]++
				if prev, ok := lastQueued[u.ID]; ok {
					fresh[prev].Status = "skipped"
					existing[fresh[prev].IdempotencyKey] = store.Decision{Status: "skipped", Created: true}
					counts[u.ID]--
					audits = append(audits, audit.Event(audit.ResetSuppressed, &u.ID, &u.DomainID, r.meta,
						map[string]any{"event_id": fresh[prev].SourceEventID, "reason": "superseded"}))
				}
				lastQueued[u.ID] = len(fresh)
			}
			existing[r.key] = store.Decision{Status: status, Created: true}
			fresh = append(fresh, store.NewDelivery{
				IdempotencyKey: r.key, UserID: u.ID, Locale: u.Locale, Recipient: u.Email, SourceEventID: r.eventID, Status: status,
			})
		}
		var queuedUsers []uuid.UUID
		for id := range lastQueued {
			queuedUsers = append(queuedUsers, id)
		}
		inserted := map[string]uuid.UUID{}
		if len(fresh) > 0 {
			if inserted, err = s.store.InsertDeliveries(ctx, tx, mailtmpl.PasswordReset, PurposeReset, s.cfg.ResetTTL, fresh, now); err != nil {
				return err
			}
		}
		for j, r := range reqs {
			d, ok := existing[r.key]
			if !ok || d.Status == "skipped" {
				continue
			}
			if d.Created {
				d.ID = inserted[r.key]
				u := users[r.userID]
				audits = append(audits, audit.Event(audit.ResetRequested, &u.ID, &u.DomainID, r.meta, map[string]any{"delivery_id": d.ID}))
				existing[r.key] = store.Decision{ID: d.ID, Status: d.Status} // a second copy in the batch publishes it too
			}
			toPublish[j] = d.ID
		}
		if s.cfg.UnlockOnReset && len(queuedUsers) > 0 {
			unlocked, err := s.store.UnlockUsers(ctx, tx, queuedUsers, now)
			if err != nil {
				return err
			}
			for _, id := range unlocked {
				u := users[id]
				audits = append(audits, audit.Event(audit.AccountUnlocked, &u.ID, &u.DomainID, audit.Meta{ActorKind: audit.ActorSystem}, nil))
			}
		}
		return s.store.InsertAudits(ctx, tx, audits)
	})
	if err != nil {
		for _, r := range reqs {
			errs[r.item] = err
		}
		return errs
	}
	var ids []uuid.UUID
	var owners []int
	for j, id := range toPublish {
		if id != uuid.Nil {
			ids = append(ids, id)
			owners = append(owners, reqs[j].item)
		}
	}
	for k, err := range s.requester.PublishIDs(ctx, ids) {
		errs[owners[k]] = err
	}
	return errs
}

// unresolved ends a request that names no single active account: nothing is
// sent, and the audit trail keeps the attempt without the identifier, which
// may be someone's email.
func (s *Service) unresolved(ctx context.Context, err error, meta audit.Meta) error {
	var p *problem.Problem
	if !errors.Is(err, store.ErrNotFound) && !errors.As(err, &p) {
		return err
	}
	zerolog.Ctx(ctx).Info().Msg("reset request names no single active account; nothing sent")
	return audit.Record(ctx, s.store, nil, audit.ResetUnresolved, nil, nil, meta, nil)
}

// TokenInfo is what the reset form shows before the user types a password.
type TokenInfo struct {
	Purpose   string    `json:"purpose"`
	LoginName string    `json:"login_name"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Inspect describes a live token without using it.
func (s *Service) Inspect(ctx context.Context, token string, purposes []string) (TokenInfo, error) {
	hash, ok := tokenHash(token)
	if !ok {
		return TokenInfo{}, ErrLinkExpired
	}
	t, err := s.store.LiveToken(ctx, hash, purposes, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return TokenInfo{}, ErrLinkExpired
	}
	if err != nil {
		return TokenInfo{}, err
	}
	return TokenInfo{Purpose: t.Purpose, LoginName: t.LoginName, ExpiresAt: t.ExpiresAt.UTC()}, nil
}

// ResetResult is the answer to a successful reset.
type ResetResult struct {
	LoginName string
	Session   *sessions.Issued
}

// Reset consumes a reset token and sets the new password, in one
// transaction: of two requests racing with one token exactly one wins.
func (s *Service) Reset(ctx context.Context, token, newPassword, confirmPassword string, meta audit.Meta) (ResetResult, error) {
	hash, ok := tokenHash(token)
	if !ok {
		return ResetResult{}, ErrLinkExpired
	}
	now := s.now()
	purposes := []string{PurposeReset}
	t, err := s.store.LiveToken(ctx, hash, purposes, now)
	if errors.Is(err, store.ErrNotFound) {
		return ResetResult{}, ErrLinkExpired
	}
	if err != nil {
		return ResetResult{}, err
	}
	u, err := s.store.UserWithDomain(ctx, nil, t.UserID)
	if err != nil {
		return ResetResult{}, err
	}
	if vs := s.policy.CheckPassword(newPassword, confirmPassword,
		credential.Identity{LoginName: u.LoginName, Extension: u.Extension, Email: u.Email}); len(vs) > 0 {
		return ResetResult{}, PolicyProblem(vs)
	}
	// Hash before the transaction: argon2id is slow, row locks should not be.
	phc, err := s.hasher.Hash(ctx, newPassword)
	if err != nil {
		return ResetResult{}, fmt.Errorf("hash password: %w", err)
	}
	var res ResetResult
	var changed events.Event
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		// The user first, then its tokens and sessions: the one lock order
		// of every credential change (store.LockUser).
		locked, err := s.store.LockUser(ctx, tx, u.ID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && locked.Status != "active") {
			return ErrLinkExpired // deleted or disabled since the link was inspected
		}
		if err != nil {
			return err
		}
		consumed, err := s.store.ConsumeToken(ctx, tx, hash, purposes, now)
		if errors.Is(err, store.ErrNotFound) {
			return ErrLinkExpired
		}
		if err != nil {
			return err
		}
		if changed, err = s.changePassword(ctx, tx, u, phc, "reset", meta, now); err != nil {
			return err
		}
		if err := audit.Record(ctx, s.store, tx, audit.TokenConsumed, &u.ID, &u.DomainID, meta,
			map[string]any{"token_id": consumed.ID, "purpose": consumed.Purpose}); err != nil {
			return err
		}
		res.LoginName = u.LoginName
		if s.cfg.LoginAfterReset {
			issued, err := s.sessions.Create(ctx, tx, u.ID)
			if err != nil {
				return err
			}
			res.Session = &issued
		}
		return nil
	})
	if err != nil {
		return ResetResult{}, err
	}
	s.outbox.Publish(ctx, changed)
	return res, nil
}

// changePassword sets the hash and does what every password change must: the
// credential version moves on (a login verifying the old password in flight
// opens nothing), the user's outstanding reset and welcome links die, every
// session ends, and a password.changed event is queued in the same
// transaction. The caller holds the user's row lock (store.LockUser).
func (s *Service) changePassword(ctx context.Context, tx pgx.Tx, u store.User, phc, via string, meta audit.Meta, now time.Time) (events.Event, error) {
	if err := s.store.SetPassword(ctx, tx, u.ID, phc, now); err != nil {
		return events.Event{}, err
	}
	if err := s.store.RevokeUserTokens(ctx, tx, u.ID, store.TokenPurposes(), now); err != nil {
		return events.Event{}, err
	}
	if err := s.sessions.EndOthers(ctx, tx, u.ID, nil); err != nil {
		return events.Event{}, err
	}
	if err := audit.Record(ctx, s.store, tx, audit.PasswordChanged, &u.ID, &u.DomainID, meta, map[string]any{"via": via}); err != nil {
		return events.Event{}, err
	}
	e, err := events.New(delivery.Source, events.TypePasswordChanged, u.ID.String(),
		PasswordChanged{UserID: u.ID, ChangedAt: now.UTC(), Via: via, Meta: meta}, now)
	if err != nil {
		return events.Event{}, err
	}
	return e, s.outbox.Add(ctx, tx, e)
}

// PolicyProblem turns policy violations into a 422 whose detail is the first
// message, so a form can show it as is.
func PolicyProblem(vs []credential.Violation) *problem.Problem {
	errs := make([]problem.FieldError, len(vs))
	for i, v := range vs {
		errs[i] = problem.FieldError{Field: v.Field, Code: v.Code, Detail: v.Message}
	}
	p := problem.Validation(errs)
	p.Detail = vs[0].Message
	return p
}

func tokenHash(token string) ([]byte, bool) {
	if len(token) < 16 || len(token) > 128 {
		return nil, false
	}
	h := credential.HashToken(token)
	return h[:], true
}
