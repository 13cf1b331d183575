// Package outbox makes "commit a change, then publish its event" lossless:
// the event is written in the change's transaction, published right after
// commit, and re-published by a relay if the process died in between.
// JetStream de-duplicates by event id, so publishing twice is harmless.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/store"
)

// Outbox queues and publishes events.
type Outbox struct {
	store     *store.Store
	publisher *events.Publisher
	log       zerolog.Logger
}

// New builds an outbox.
func New(st *store.Store, pub *events.Publisher, log zerolog.Logger) *Outbox {
	return &Outbox{store: st, publisher: pub, log: log}
}

// Add queues e in tx.
func (o *Outbox) Add(ctx context.Context, tx pgx.Tx, e events.Event) error {
	if err := e.Validate(); err != nil {
		return err
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode outbox event: %w", err)
	}
	return o.store.InsertOutbox(ctx, tx, store.OutboxEvent{EventID: e.ID, Subject: e.NATSSubject(), Payload: payload})
}

// Publish sends events queued by a committed transaction. A failure is left
// to the relay, so the caller's request still succeeds.
func (o *Outbox) Publish(ctx context.Context, evs ...events.Event) {
	for _, e := range evs {
		if _, err := o.publisher.Publish(ctx, e); err != nil {
			o.log.Warn().Err(err).Str("event_id", e.ID).Msg("publish after commit failed; the outbox relay will retry")
			continue
		}
		if err := o.store.MarkOutboxPublished(ctx, nil, e.ID); err != nil {
			o.log.Warn().Err(err).Str("event_id", e.ID).Msg("mark outbox event published")
		}
	}
}

// Relay re-publishes events left unpublished for longer than grace, every
// interval, until ctx ends, and prunes what was published a day ago. Any
// number of processes may relay at once: each row is claimed by one of them.
func (o *Outbox) Relay(ctx context.Context, interval, grace time.Duration) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if n, err := o.RelayOnce(ctx, time.Now().Add(-grace)); err != nil {
			o.log.Warn().Err(err).Msg("outbox relay")
		} else if n > 0 {
			o.log.Info().Int("events", n).Msg("outbox relay published stale events")
		}
		if time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			if _, err := o.store.PruneOutbox(ctx, time.Now().Add(-24*time.Hour)); err != nil {
				o.log.Warn().Err(err).Msg("prune outbox")
			}
		}
	}
}

// RelayOnce publishes up to 100 events queued before olderThan, each in its
// own transaction, so one that cannot be published holds up no other.
func (o *Outbox) RelayOnce(ctx context.Context, olderThan time.Time) (int, error) {
	published := 0
	for published < 100 {
		var claimed bool
		err := o.store.InTx(ctx, func(tx pgx.Tx) error {
			rows, err := o.store.ClaimStaleOutbox(ctx, tx, olderThan, 1)
			if err != nil || len(rows) == 0 {
				return err
			}
			claimed = true
			r := rows[0]
			e, err := events.Decode(r.Subject, r.Payload)
			if err != nil {
				// It can never be published; retrying would block the relay.
				o.log.Error().Err(err).Str("event_id", r.EventID).Msg("outbox event is malformed; set aside")
				return o.store.MarkOutboxPublished(ctx, tx, r.EventID)
			}
			if _, err := o.publisher.Publish(ctx, e); err != nil {
				return err
			}
			return o.store.MarkOutboxPublished(ctx, tx, r.EventID)
		})
		if err != nil {
			return published, err
		}
		if !claimed {
			return published, nil
		}
		published++
	}
	return published, nil
}
