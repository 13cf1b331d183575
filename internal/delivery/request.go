// Package delivery turns "this user should get this email" into exactly one
// email: a delivery row recorded once per idempotency key, a mail.requested
// event with a deterministic id, and the mailer worker that renders, mints
// the link's token, sends, and records the outcome.
package delivery

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/store"
)

// Source names this service in the events it publishes.
const Source = "latchkey"

// MailRequested is the data of a mail.requested event. It names the delivery
// only: everything else, the token above all, is looked up or made by the
// mailer, so no secret ever travels through the stream.
type MailRequested struct {
	DeliveryID uuid.UUID `json:"delivery_id"`
}

// Requester records deliveries and asks the mailer to send them.
type Requester struct {
	store     *store.Store
	publisher *events.Publisher
	now       func() time.Time
}

// NewRequester builds a requester.
func NewRequester(st *store.Store, pub *events.Publisher, now func() time.Time) *Requester {
	return &Requester{store: st, publisher: pub, now: now}
}

// Record stores the delivery in tx, once per idempotency key; created is
// false when it existed already (a redelivered request).
func (r *Requester) Record(ctx context.Context, tx pgx.Tx, d store.NewDelivery) (store.Delivery, bool, error) {
	return r.store.InsertDelivery(ctx, tx, d, r.now())
}

// Publish asks the mailer to send a recorded delivery. The event id derives
// from the delivery, so publishing again (after a crash, on redelivery) is
// de-duplicated by JetStream, and by the delivery's status past its window.
func (r *Requester) Publish(ctx context.Context, d store.Delivery) error {
	return r.PublishIDs(ctx, []uuid.UUID{d.ID})[0]
}

// PublishIDs requests several deliveries at once; the result says, per id,
// whether the request was stored.
func (r *Requester) PublishIDs(ctx context.Context, ids []uuid.UUID) []error {
	evs := make([]events.Event, len(ids))
	errs := make([]error, len(ids))
	for i, id := range ids {
		e, err := events.New(Source, events.TypeMailRequested, id.String(), MailRequested{DeliveryID: id}, r.now())
		if err != nil {
			errs[i] = err
			continue
		}
		e.ID = "mail.requested:" + id.String()
		evs[i] = e
	}
	for i, err := range r.publisher.PublishAll(ctx, evs) {
		if errs[i] == nil {
			errs[i] = err
		}
	}
	return errs
}
