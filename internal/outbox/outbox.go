// Package outbox makes "commit a change, then publish its event" lossless:
// the event is written in the change's transaction, published right after
// commit, and re-published by a relay if the process died in between or the
// stream did not acknowledge it. JetStream de-duplicates by event id, so
// publishing twice is harmless. An acknowledged event is deleted: the table
// holds only what waits to be published.
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

// relayBatch is how many stale events the relay publishes per transaction,
// and dispatchBacklog how many handed-over batches wait for the relay before
// Dispatch leaves further ones to the relay's scan.
const (
	relayBatch      = 100
	dispatchBacklog = 64
	// deleteTimeout bounds the delete of acknowledged rows; a row not
	// deleted is only published once more.
	deleteTimeout = 5 * time.Second
	// batchTimeout bounds one relay transaction, acknowledgements included,
	// and the prune: the relay never waits on the network for longer.
	batchTimeout = 30 * time.Second
)

// Outbox queues and publishes events.
type Outbox struct {
	store     *store.Store
	publisher *events.Publisher
	log       zerolog.Logger
	// dispatched carries committed events from Dispatch to Relay.
	dispatched chan []events.Event
}

// New builds an outbox.
func New(st *store.Store, pub *events.Publisher, log zerolog.Logger) *Outbox {
	return &Outbox{store: st, publisher: pub, log: log, dispatched: make(chan []events.Event, dispatchBacklog)}
}

// Encode is the row Add writes for e, for statements that queue events
// themselves (store.FinishDeliveries).
func Encode(e events.Event) (store.OutboxEvent, error) {
	if err := e.Validate(); err != nil {
		return store.OutboxEvent{}, err
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return store.OutboxEvent{}, fmt.Errorf("encode outbox event: %w", err)
	}
	return store.OutboxEvent{EventID: e.ID, Subject: e.NATSSubject(), Payload: payload}, nil
}

// Add queues e in tx.
func (o *Outbox) Add(ctx context.Context, tx pgx.Tx, e events.Event) error {
	row, err := Encode(e)
	if err != nil {
		return err
	}
	return o.store.InsertOutbox(ctx, tx, row)
}

// Publish sends events queued by a committed transaction and waits for
// their acknowledgements, at most the publisher's ack timeout. A failure is
// left to the relay, so the caller's request still succeeds.
func (o *Outbox) Publish(ctx context.Context, evs ...events.Event) {
	o.publish(ctx, evs)
}

// Dispatch hands events queued by a committed transaction to this process's
// relay (Relay), which publishes them at once; it never waits, so a stream
// that does not acknowledge holds up nothing. When the relay is not running
// or is behind, the events are published by its scan for stale rows.
func (o *Outbox) Dispatch(evs ...events.Event) {
	if len(evs) == 0 {
		return
	}
	select {
	case o.dispatched <- evs:
	default:
		o.log.Debug().Int("events", len(evs)).Msg("outbox relay busy; events left to its scan")
	}
}

// publish publishes evs and deletes the rows of those acknowledged. It
// reports whether every event was acknowledged.
func (o *Outbox) publish(ctx context.Context, evs []events.Event) bool {
	var acked []string
	ok := true
	for i, err := range o.publisher.PublishAll(ctx, evs) {
		if err != nil {
			ok = false
			o.log.Warn().Err(err).Str("event_id", evs[i].ID).Msg("publish after commit failed; the outbox relay will retry")
			continue
		}
		acked = append(acked, evs[i].ID)
	}
	// Deleted even when the caller is gone: the events are out.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if err := o.store.DeleteOutbox(dctx, nil, acked); err != nil {
		o.log.Warn().Err(err).Int("events", len(acked)).Msg("delete published outbox events; the relay will publish them again")
	}
	return ok
}

// Relay publishes what Dispatch hands it, and every interval re-publishes
// events left unpublished for longer than grace, until ctx ends; it prunes
// what was set aside a day ago. Any number of processes may relay at once:
// each stale row is claimed by one of them.
func (o *Outbox) Relay(ctx context.Context, interval, grace time.Duration) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case evs := <-o.dispatched:
			// Take whatever else is waiting too: one round trip and one
			// delete for all of it.
		more:
			for len(evs) < relayBatch {
				select {
				case next := <-o.dispatched:
					evs = append(evs, next...)
				default:
					break more
				}
			}
			o.publish(ctx, evs)
			continue
		case <-ticker.C:
		}
		if n, err := o.RelayOnce(ctx, time.Now().Add(-grace)); err != nil {
			o.log.Warn().Err(err).Msg("outbox relay")
		} else if n > 0 {
			o.log.Info().Int("events", n).Msg("outbox relay published stale events")
		}
		if time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			pctx, cancel := context.WithTimeout(ctx, batchTimeout)
			_, err := o.store.PruneOutbox(pctx, time.Now().Add(-24*time.Hour))
			cancel()
			if err != nil {
				o.log.Warn().Err(err).Msg("prune outbox")
			}
		}
	}
}

// RelayOnce publishes events queued before olderThan, up to relayBatch per
// transaction and ten transactions per call, and returns how many it
// handled. A malformed event is set aside (logged, kept a day) rather than
// retried forever; an event the stream does not acknowledge stays for the
// next call, and ends this one.
func (o *Outbox) RelayOnce(ctx context.Context, olderThan time.Time) (int, error) {
	handled := 0
	for range 10 {
		n, full, err := o.relayBatch(ctx, olderThan)
		handled += n
		if err != nil || !full {
			return handled, err
		}
	}
	return handled, nil
}

// relayBatch publishes one batch of stale events in one transaction, which
// holds their rows (others skip them) while the acknowledgements come.
func (o *Outbox) relayBatch(ctx context.Context, olderThan time.Time) (handled int, full bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	err = o.store.InTx(ctx, func(tx pgx.Tx) error {
		handled, full = 0, false
		rows, err := o.store.ClaimStaleOutbox(ctx, tx, olderThan, relayBatch)
		if err != nil || len(rows) == 0 {
			return err
		}
		full = len(rows) == relayBatch
		var evs []events.Event
		for _, r := range rows {
			e, err := events.Decode(r.Subject, r.Payload)
			if err != nil {
				// It can never be published; retrying would block the relay.
				o.log.Error().Err(err).Str("event_id", r.EventID).Msg("outbox event is malformed; set aside")
				if err := o.store.MarkOutboxPublished(ctx, tx, r.EventID); err != nil {
					return err
				}
				handled++
				continue
			}
			evs = append(evs, e)
		}
		var acked []string
		var failed error
		for i, err := range o.publisher.PublishAll(ctx, evs) {
			if err != nil {
				if failed == nil {
					failed = err
				}
				continue
			}
			acked = append(acked, evs[i].ID)
		}
		handled += len(acked)
		if err := o.store.DeleteOutbox(ctx, tx, acked); err != nil {
			return err
		}
		if failed != nil {
			// What was acknowledged is committed; the rest waits for the
			// next call.
			full = false
			o.log.Warn().Err(failed).Int("unacknowledged", len(evs)-len(acked)).Msg("outbox relay: stream did not acknowledge")
		}
		return nil
	})
	return handled, full, err
}
