package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable marks a publish that JetStream did not acknowledge (NATS
// down, reconnecting, or too slow): the caller may try again shortly.
var ErrUnavailable = errors.New("event stream unavailable")

// DefaultAckTimeout is how long a publish waits for the stream's
// acknowledgement unless the caller's context ends sooner: JetStream's own
// default for API requests. A PubAck that does not come within it is
// treated as lost (ErrUnavailable); the event may still have been stored.
const DefaultAckTimeout = 5 * time.Second

// Publisher puts events on the stream. Every wait for an acknowledgement is
// bounded by its ack timeout, whatever the caller's context: a PubAck that
// never comes (a clustered stream electing a leader looks like that) must
// not hold a worker or a request forever.
type Publisher struct {
	js         jetstream.JetStream
	ackTimeout time.Duration
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithAckTimeout bounds each wait for acknowledgements (default
// DefaultAckTimeout).
func WithAckTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) {
		if d > 0 {
			p.ackTimeout = d
		}
	}
}

// NewPublisher wraps a JetStream context.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, ackTimeout: DefaultAckTimeout}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish stores the event once: a second publish of the same event id within
// the stream's duplicate window is dropped by JetStream and reported as
// duplicate. Publish returns after the stream acknowledged the write, or
// with ErrUnavailable after the ack timeout.
func (p *Publisher) Publish(ctx context.Context, e Event) (duplicate bool, err error) {
	if err := e.Validate(); err != nil {
		return false, err
	}
	msg, err := encode(e)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.ID), jetstream.WithExpectStream(StreamName))
	if err != nil {
		return false, publishError(e, err)
	}
	return ack.Duplicate, nil
}

func encode(e Event) (*nats.Msg, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	msg := nats.NewMsg(e.NATSSubject())
	msg.Data = body
	msg.Header.Set("Content-Type", ContentType)
	return msg, nil
}

// PublishAll publishes events without waiting for each acknowledgement
// before sending the next, then waits for all of them, at most the ack
// timeout in all: one round trip's latency for the lot. The result says, per
// event, whether it was stored; an event not acknowledged in time is
// ErrUnavailable (it may have been stored all the same).
func (p *Publisher) PublishAll(ctx context.Context, evs []Event) []error {
	errs := make([]error, len(evs))
	futures := make([]jetstream.PubAckFuture, len(evs))
	for i, e := range evs {
		if err := e.Validate(); err != nil {
			errs[i] = err
			continue
		}
		msg, err := encode(e)
		if err != nil {
			errs[i] = err
			continue
		}
		futures[i], err = p.js.PublishMsgAsync(msg, jetstream.WithMsgID(e.ID), jetstream.WithExpectStream(StreamName))
		if err != nil {
			errs[i] = publishError(e, err)
		}
	}
	timeout := time.NewTimer(p.ackTimeout)
	defer timeout.Stop()
	expired := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		if expired {
			// Those acknowledged already count; the others are late.
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs[i] = publishError(evs[i], err)
			default:
				errs[i] = publishError(evs[i], jetstream.ErrAsyncPublishTimeout)
			}
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = publishError(evs[i], err)
		case <-timeout.C:
			expired = true
			errs[i] = publishError(evs[i], jetstream.ErrAsyncPublishTimeout)
		case <-ctx.Done():
			expired = true
			errs[i] = publishError(evs[i], ctx.Err())
		}
	}
	return errs
}

// publishError marks the failures that mean "NATS is not answering right
// now" as ErrUnavailable; the caller's own cancellation stays what it is.
func publishError(e Event, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("publish %s %s: %w", e.Type, e.ID, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		return fmt.Errorf("publish %s %s: %w: %w", e.Type, e.ID, ErrUnavailable, err)
	}
	return fmt.Errorf("publish %s %s: %w", e.Type, e.ID, err)
}
