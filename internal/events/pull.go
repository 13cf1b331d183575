package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pollWait is how long one pull waits for a message when none is pending;
// the pull is then simply renewed. JetStream's idle heartbeats (every 5 s
// for waits this long) reveal a lost server well before it ends.
const pollWait = 30 * time.Second

// pull takes up to max messages from the consumer: all that are pending now
// (up to max), or, when none is, the next one to arrive, waiting at most
// pollWait. It never asks for more than max, so no message is delivered to
// this process before a worker is free to take it: a message waiting in a
// client-side buffer would have its ack wait run out (and be redelivered,
// its attempt burnt) while the workers are busy, and would be stranded
// there if the process stopped.
//
// With ctx cancelled it returns what had already arrived together with
// ctx's error; the caller releases those. Other errors come with no
// messages.
func pull(ctx context.Context, c jetstream.Consumer, max int) ([]jetstream.Msg, error) {
	msgs, _ := collect(c.FetchNoWait(max))
	if len(msgs) > 0 {
		return msgs, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// Nothing pending (or at MaxAckPending, or a failure the wait below
	// reports again): wait for the next message. Asking for one, the
	// request is complete when it arrives, so nothing is left to arrive
	// after we stopped reading.
	pctx, cancel := context.WithTimeout(ctx, pollWait)
	defer cancel()
	msgs, err := collect(c.Fetch(1, jetstream.FetchContext(pctx)))
	if ctx.Err() != nil {
		return msgs, ctx.Err()
	}
	if len(msgs) == 0 {
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // the wait ended quietly; the caller pulls again
		}
		return nil, err
	}
	if max > 1 {
		if meta, err := msgs[0].Metadata(); err == nil && meta.NumPending > 0 {
			more, _ := collect(c.FetchNoWait(max - 1))
			msgs = append(msgs, more...)
		}
	}
	return msgs, nil
}

// collect reads a fetch's messages until it ends.
func collect(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batch.Error()
}

// consumerGone tells a consumer that no longer exists, or a connection
// closed for good, from the passing failures a pull can meet (a missed
// heartbeat, a reconnect, a leader election). Its error means: stop, so the
// process exits and is restarted rather than idling forever.
func consumerGone(ctx context.Context, c jetstream.Consumer, name string, pullErr error) error {
	if errors.Is(pullErr, nats.ErrConnectionClosed) {
		return fmt.Errorf("consume %s: %w", name, pullErr)
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.Info(ictx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("consume %s: %w (pull: %w)", name, err, pullErr)
	}
	return nil
}

// release hands messages that arrived while stopping back to the consumer
// for immediate redelivery to another worker. JetStream counts the
// redelivery as a new attempt (NumDelivered + 1).
func release(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
