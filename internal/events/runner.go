package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/store"
)

// Handler applies one event. Its error decides what happens next:
//   - nil: done, the message is acked;
//   - an error wrapping ErrPermanent (see Permanent) or ErrInvalidEvent: it
//     can never succeed, so it becomes a dead letter at once;
//   - any other error: transient, redelivered after a backoff until the
//     consumer's MaxDeliver, then a dead letter.
//
// Handlers must make their effect idempotent (see store.MarkEventProcessed):
// delivery is at least once.
type Handler func(ctx context.Context, e Event) error

// Item is one event of a batch, with how often it has been delivered.
type Item struct {
	Event   Event
	Attempt int
}

// BatchHandler applies several events at once, so per-event costs (a
// transaction, a round trip) are paid once per batch. It returns one error
// per item, each meaning what a Handler's error means.
type BatchHandler func(ctx context.Context, items []Item) []error

// ErrPermanent marks a failure that retrying cannot fix.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so the runner dead-letters the event without retrying.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// RetryAfter wraps a transient err with the delay the handler wants before
// the next attempt (an SMTP server's hint, say).
func RetryAfter(err error, delay time.Duration) error { return &retryError{err: err, delay: delay} }

type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// DeadLetterStore records events a worker gave up on.
type DeadLetterStore interface {
	InsertDeadLetter(ctx context.Context, d store.DeadLetter) error
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Consumer is the durable name, used in logs, metrics and dead letters.
	Consumer string
	// MaxDeliver must equal the consumer's MaxDeliver: the runner turns the
	// last failed attempt into a dead letter itself.
	MaxDeliver int
	// Concurrency is how many events (or batches) are handled at once.
	Concurrency int
	// BatchSize is the most events handed to a BatchHandler at once; a
	// batch is whatever has arrived when a slot is free, up to this size,
	// waiting at most BatchWait for more while the consumer reports more
	// pending (and not at all otherwise).
	BatchSize int
	BatchWait time.Duration
	// RetryBase and RetryMax shape the exponential backoff between attempts.
	RetryBase, RetryMax time.Duration
	// HandlerTimeout bounds one attempt; keep it below the consumer's AckWait.
	HandlerTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight events may finish after Run's
	// context is cancelled.
	ShutdownTimeout time.Duration
}

func (c *RunnerConfig) fill() {
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 8
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1
	}
	if c.BatchWait == 0 {
		c.BatchWait = 2 * time.Millisecond
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 25 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
}

// Runner pulls events from one durable consumer and feeds them to a Handler.
type Runner struct {
	cfg         RunnerConfig
	consumer    jetstream.Consumer
	handler     BatchHandler
	deadLetters DeadLetterStore
	metrics     *Metrics
	log         zerolog.Logger
}

// NewRunner builds a runner that hands events to handler one at a time;
// metrics may be nil.
func NewRunner(consumer jetstream.Consumer, handler Handler, deadLetters DeadLetterStore, metrics *Metrics, log zerolog.Logger, cfg RunnerConfig) *Runner {
	cfg.BatchSize = 1
	return NewBatchRunner(consumer, One(handler), deadLetters, metrics, log, cfg)
}

// One adapts a Handler to a BatchHandler: the events of a batch are handled
// one after another.
func One(handler Handler) BatchHandler {
	return func(ctx context.Context, items []Item) []error {
		errs := make([]error, len(items))
		for i, it := range items {
			errs[i] = handler(ctx, it.Event)
		}
		return errs
	}
}

// NewBatchRunner builds a runner that hands events to handler in batches of
// up to cfg.BatchSize.
func NewBatchRunner(consumer jetstream.Consumer, handler BatchHandler, deadLetters DeadLetterStore, metrics *Metrics, log zerolog.Logger, cfg RunnerConfig) *Runner {
	cfg.fill()
	return &Runner{
		cfg: cfg, consumer: consumer, handler: handler, deadLetters: deadLetters, metrics: metrics,
		log: log.With().Str("consumer", cfg.Consumer).Logger(),
	}
}

// Run handles events until ctx is cancelled. It pulls a message only when a
// worker slot is free, so no message waits in a buffer while its ack wait
// runs out; on cancellation it stops taking messages at once (those not yet
// started are redelivered) and lets started ones finish within
// ShutdownTimeout.
func (r *Runner) Run(ctx context.Context) error {
	iter, err := r.consumer.Messages(jetstream.PullMaxMessages(r.cfg.Concurrency * r.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("consume %s: %w", r.cfg.Consumer, err)
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()

	// In-flight work outlives ctx so a shutdown finishes what it started.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	slots := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	var runErr error
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		msg, err := iter.Next()
		if err != nil {
			<-slots
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() == nil {
					// Not asked to stop: the consumer was deleted or the
					// connection closed for good. Fail loudly so the process
					// exits and is restarted, rather than idle forever.
					runErr = fmt.Errorf("consume %s: %w", r.cfg.Consumer, err)
				}
				break
			}
			// Missed heartbeats and the like: the iterator recovers by itself.
			r.log.Warn().Err(err).Msg("pull from consumer")
			continue
		}
		batch := []jetstream.Msg{msg}
		for len(batch) < r.cfg.BatchSize {
			// Wait for more only while the consumer says more are pending:
			// under load that fills batches, at low load it adds no latency.
			wait := time.Duration(50 * time.Microsecond)
			if meta, err := batch[len(batch)-1].Metadata(); err == nil && meta.NumPending > 0 {
				wait = r.cfg.BatchWait
			}
			more, err := iter.Next(jetstream.NextMaxWait(wait))
			if err != nil {
				break // nothing more right now (or closed: the next Next says so)
			}
			batch = append(batch, more)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			r.handle(workCtx, batch)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.cfg.ShutdownTimeout):
		r.log.Warn().Msg("shutdown timeout: abandoning in-flight events, they will be redelivered")
		cancelWork()
		<-done
	}
	return runErr
}

// received is a message being handled, with what settling it needs.
type received struct {
	msg   jetstream.Msg
	meta  *jetstream.MsgMetadata
	event Event
	log   zerolog.Logger
}

func (r *Runner) handle(ctx context.Context, msgs []jetstream.Msg) {
	var recs []received
	var items []Item
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack or redeliver.
			r.log.Error().Err(err).Msg("message without JetStream metadata")
			continue
		}
		// The message may have waited in the client's buffer; restart its ack
		// wait so it cannot be redelivered to another worker while handled
		// here (HandlerTimeout stays below the ack wait).
		_ = msg.InProgress()
		rec := received{msg: msg, meta: meta,
			log: r.log.With().Uint64("stream_seq", meta.Sequence.Stream).Int("attempt", int(meta.NumDelivered)).Logger()}
		event, err := Decode(msg.Subject(), msg.Data())
		if err != nil {
			r.settle(ctx, rec, err)
			continue
		}
		rec.event = event
		rec.log = rec.log.With().Str("event_id", event.ID).Str("event_type", event.Type).Logger()
		recs = append(recs, rec)
		items = append(items, Item{Event: event, Attempt: int(meta.NumDelivered)})
	}
	if len(items) == 0 {
		return
	}
	hctx := ctx
	if len(recs) == 1 {
		hctx = recs[0].log.WithContext(ctx)
	} else {
		hctx = r.log.WithContext(ctx)
	}
	hctx, cancel := context.WithTimeout(hctx, r.cfg.HandlerTimeout)
	errs, panicked := r.callHandler(hctx, items)
	cancel()
	if panicked != nil && len(items) > 1 {
		// One poison event must not take the batch with it: find it by
		// handling the events one by one.
		r.log.Error().Interface("panic", panicked).Msg("batch handler panicked; handling its events one by one")
		errs = make([]error, len(items))
		for i := range items {
			ictx, cancel := context.WithTimeout(recs[i].log.WithContext(ctx), r.cfg.HandlerTimeout)
			one, p := r.callHandler(ictx, items[i:i+1])
			cancel()
			if p != nil {
				errs[i] = Permanent(fmt.Errorf("handler panicked: %v", p))
			} else {
				errs[i] = one[0]
			}
		}
	} else if panicked != nil {
		errs = []error{Permanent(fmt.Errorf("handler panicked: %v", panicked))}
	}
	for i, rec := range recs {
		var err error
		if i < len(errs) {
			err = errs[i]
		}
		r.settle(ctx, rec, err)
	}
}

// settle acks, retries or dead-letters one message by its handler's error.
func (r *Runner) settle(ctx context.Context, rec received, err error) {
	attempt := int(rec.meta.NumDelivered)
	switch {
	case err == nil:
		r.metrics.observe(r.cfg.Consumer, outcomeDone)
		if ackErr := rec.msg.Ack(); ackErr != nil {
			// Handlers record their effect idempotently, so a lost ack costs
			// only a redelivery that the handler recognises.
			rec.log.Warn().Err(ackErr).Msg("ack failed; the event will be redelivered")
		}
	case errors.Is(err, ErrPermanent) || errors.Is(err, ErrInvalidEvent):
		r.deadLetter(ctx, rec.log, rec.msg, rec.meta, rec.event, err)
	case attempt >= r.cfg.MaxDeliver:
		r.deadLetter(ctx, rec.log, rec.msg, rec.meta, rec.event, fmt.Errorf("gave up after %d attempts: %w", attempt, err))
	default:
		delay := r.backoff(attempt, err)
		r.metrics.observe(r.cfg.Consumer, outcomeRetry)
		rec.log.Warn().Err(err).Dur("retry_in", delay).Msg("event failed; will retry")
		if nakErr := rec.msg.NakWithDelay(delay); nakErr != nil {
			rec.log.Warn().Err(nakErr).Msg("nak failed; the event will be redelivered after the ack wait")
		}
	}
}

// callHandler runs the handler, reporting a panic instead of crashing: a
// poison event must not take the worker down.
func (r *Runner) callHandler(ctx context.Context, items []Item) (errs []error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			errs, panicked = nil, p
		}
	}()
	errs = r.handler(ctx, items)
	if len(errs) != len(items) {
		return nil, fmt.Sprintf("batch handler returned %d results for %d events", len(errs), len(items))
	}
	return errs, nil
}

func (r *Runner) deadLetter(ctx context.Context, log zerolog.Logger, msg jetstream.Msg, meta *jetstream.MsgMetadata, event Event, cause error) {
	d := store.DeadLetter{
		Consumer:       r.cfg.Consumer,
		StreamSequence: meta.Sequence.Stream,
		EventID:        event.ID,
		EventType:      event.Type,
		Subject:        msg.Subject(),
		Payload:        msg.Data(),
		Reason:         cause.Error(),
		Attempts:       int(meta.NumDelivered),
	}
	if d.EventID == "" {
		d.EventID = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	if err := r.recordDeadLetter(ctx, log, msg, meta, d); err != nil {
		// Past MaxDeliver JetStream would not redeliver a nak'ed message, so
		// the event would be lost; before that, a retry later is safe.
		r.metrics.observe(r.cfg.Consumer, outcomeRetry)
		log.Error().Err(err).Msg("record dead letter failed; will retry")
		if nakErr := msg.NakWithDelay(r.cfg.RetryBase); nakErr != nil {
			log.Warn().Err(nakErr).Msg("nak failed")
		}
		return
	}
	r.metrics.observe(r.cfg.Consumer, outcomeDeadLetter)
	log.Error().Err(cause).Msg("event dead-lettered")
	if err := msg.TermWithReason(truncate(cause.Error(), 200)); err != nil {
		log.Warn().Err(err).Msg("term failed; a redelivery will be dead-lettered again and de-duplicated")
	}
}

// recordDeadLetter stores the dead letter. On the last delivery there is no
// later retry to fall back on, so it keeps trying (keeping the message
// alive with InProgress) until it succeeds or the process stops.
func (r *Runner) recordDeadLetter(ctx context.Context, log zerolog.Logger, msg jetstream.Msg, meta *jetstream.MsgMetadata, d store.DeadLetter) error {
	wait := r.cfg.RetryBase
	for {
		err := r.deadLetters.InsertDeadLetter(ctx, d)
		if err == nil || int(meta.NumDelivered) < r.cfg.MaxDeliver || ctx.Err() != nil {
			return err
		}
		log.Error().Err(err).Dur("retry_in", wait).Msg("record dead letter of the last attempt failed; retrying")
		_ = msg.InProgress()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// backoff is exponential with full jitter, honouring a handler's hint.
func (r *Runner) backoff(attempt int, err error) time.Duration {
	var hint *retryError
	if errors.As(err, &hint) && hint.delay > 0 {
		return min(hint.delay, r.cfg.RetryMax)
	}
	d := r.cfg.RetryBase
	for i := 1; i < attempt && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
