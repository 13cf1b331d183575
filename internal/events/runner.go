package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
// delivery is at least once. Their answer must be idempotent too: a
// redelivered event whose effect already ended in a permanent failure
// returns that failure again, not nil. The runner writes the dead letter
// before it terminates the message, and when it could not (the process
// stopped or crashed in between), the redelivery is what writes it.
//
// A handler should honour its context's deadline (HandlerTimeout); one
// that may not (an SMTP exchange interrupted after the data went out would
// send twice) is kept alive by the runner's heartbeat up to StuckAfter.
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
	// batch is whatever is pending when a slot is free, up to this size.
	BatchSize int
	// RetryBase and RetryMax shape the exponential backoff between attempts.
	RetryBase, RetryMax time.Duration
	// HandlerTimeout is the deadline of one attempt's context.
	HandlerTimeout time.Duration
	// StuckAfter is how long the runner keeps a handler's messages alive
	// (InProgress every third of the consumer's ack wait) while it runs.
	// A handler still running then is taken to be stuck: logged, its slot
	// given back and its messages left to be redelivered after the ack
	// wait. When more handlers are stuck than there are slots, Run fails
	// so the process is restarted. Default 10 × HandlerTimeout.
	StuckAfter time.Duration
	// ShutdownTimeout bounds how long Run waits, once its context is
	// cancelled, for started events to finish; then it cancels their
	// context and returns within another second whatever they do. An event
	// not finished is redelivered after the ack wait.
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
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 25 * time.Second
	}
	if c.StuckAfter == 0 {
		c.StuckAfter = 10 * c.HandlerTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
}

// ErrHandlersStuck is Run's error when more handlers than it has slots
// have run past StuckAfter: the process is wedged and should be restarted.
var ErrHandlersStuck = errors.New("handlers stuck")

const (
	// abandonGrace is how long Run still waits, after the shutdown timeout
	// cancelled the handlers' context, for those that honour it to settle
	// their messages.
	abandonGrace = time.Second
	// storeTimeout bounds one write of a dead letter.
	storeTimeout = 10 * time.Second
	// defaultAckWait is assumed when the consumer's ack wait is unknown;
	// it is JetStream's default.
	defaultAckWait = 30 * time.Second
)

// Runner pulls events from one durable consumer and feeds them to a Handler.
type Runner struct {
	cfg         RunnerConfig
	consumer    jetstream.Consumer
	handler     BatchHandler
	deadLetters DeadLetterStore
	metrics     *Metrics
	log         zerolog.Logger

	beat     time.Duration           // interval of the in-progress heartbeat
	stuck    atomic.Int32            // handlers past StuckAfter and still running
	stopLoop context.CancelCauseFunc // stops taking messages (set by Run)
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

// Run handles events until ctx is cancelled. It pulls messages only for
// free worker slots, as many as they take, so no message waits in a buffer
// while its ack wait runs out; while a message is worked on, its ack wait
// is restarted (InProgress) every third of it, up to StuckAfter. On
// cancellation it stops taking messages at once (any that arrive are
// handed back with Nak, for another worker at once) and lets started ones
// finish within ShutdownTimeout; it returns within a second after that in
// any case.
func (r *Runner) Run(ctx context.Context) error {
	r.beat = r.heartbeatInterval(ctx)
	// In-flight work outlives ctx so a shutdown finishes what it started.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// taking ends when no more messages are to be taken: ctx is cancelled,
	// or the handlers are stuck (see handle).
	taking, stopLoop := context.WithCancelCause(ctx)
	defer stopLoop(nil)
	r.stopLoop = stopLoop
	slots := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	var runErr error
loop:
	for {
		select {
		case slots <- struct{}{}:
		case <-taking.Done():
			break loop
		}
		free := 1
	more:
		for free < r.cfg.Concurrency {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break more
			}
		}
		msgs, err := pull(taking, r.consumer, free*r.cfg.BatchSize)
		if taking.Err() != nil {
			release(msgs)
			for range free {
				<-slots
			}
			break
		}
		if err != nil {
			for range free {
				<-slots
			}
			if runErr = consumerGone(taking, r.consumer, r.cfg.Consumer, err); runErr != nil {
				break
			}
			r.log.Warn().Err(err).Msg("pull from consumer")
			sleepCtx(taking, time.Second)
			continue
		}
		for len(msgs) > 0 {
			batch := msgs[:min(len(msgs), r.cfg.BatchSize)]
			msgs = msgs[len(batch):]
			free--
			wg.Add(1)
			var once sync.Once
			done := func() { once.Do(func() { <-slots; wg.Done() }) }
			go r.handle(workCtx, batch, done)
		}
		for range free {
			<-slots
		}
	}
	if cause := context.Cause(taking); ctx.Err() == nil && errors.Is(cause, ErrHandlersStuck) {
		runErr = fmt.Errorf("consume %s: %w", r.cfg.Consumer, cause)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	timer := time.NewTimer(r.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		r.log.Warn().Dur("shutdown_timeout", r.cfg.ShutdownTimeout).
			Msg("shutdown timeout: abandoning in-flight events, they will be redelivered")
		cancelWork()
		select {
		case <-finished:
		case <-time.After(abandonGrace):
			r.log.Error().Msg("shutdown timeout: handlers ignore their cancelled context; returning without them")
		}
	}
	return runErr
}

// heartbeatInterval is a third of the consumer's ack wait, so a lost
// heartbeat or two do not let it run out.
func (r *Runner) heartbeatInterval(ctx context.Context) time.Duration {
	ackWait := defaultAckWait
	info := r.consumer.CachedInfo()
	if info == nil {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, _ = r.consumer.Info(ictx)
		cancel()
	}
	if info != nil && info.Config.AckWait > 0 {
		ackWait = info.Config.AckWait
	}
	return max(ackWait/3, 10*time.Millisecond)
}

// keepAlive restarts the messages' ack wait every r.beat until stop is
// called or ctx ends. A message already settled answers InProgress with
// ErrMsgAlreadyAckd without a round trip.
func (r *Runner) keepAlive(ctx context.Context, msgs []jetstream.Msg) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.beat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// received is a message being handled, with what settling it needs.
type received struct {
	msg   jetstream.Msg
	meta  *jetstream.MsgMetadata
	event Event
	log   zerolog.Logger
}

// handle works on one batch and settles each message; done gives the
// batch's slot back (at the end, or earlier if the handler is stuck).
func (r *Runner) handle(ctx context.Context, msgs []jetstream.Msg, done func()) {
	defer done()
	stopBeat := r.keepAlive(ctx, msgs)
	defer stopBeat()
	var recs []received
	var items []Item
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack or redeliver.
			r.log.Error().Err(err).Msg("message without JetStream metadata")
			continue
		}
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
	result := make(chan []error, 1)
	go func() { result <- r.apply(ctx, recs, items) }()
	var errs []error
	stuck := time.NewTimer(r.cfg.StuckAfter)
	select {
	case errs = <-result:
		stuck.Stop()
	case <-stuck.C:
		// A handler that never returns must not hold its slot, nor its
		// messages, for good: another worker gets them after the ack
		// wait, and the handlers' idempotency covers the overlap.
		started := time.Now().Add(-r.cfg.StuckAfter)
		stopBeat()
		n := r.stuck.Add(1)
		for _, rec := range recs {
			r.metrics.observe(r.cfg.Consumer, outcomeStuck)
			rec.log.Error().Dur("running", r.cfg.StuckAfter).
				Msg("handler stuck; giving its slot back, the event will be redelivered after the ack wait")
		}
		if int(n) > r.cfg.Concurrency {
			r.stopLoop(ErrHandlersStuck)
		}
		done()
		errs = <-result
		r.stuck.Add(-1)
		r.log.Warn().Dur("ran", time.Since(started)).Int("events", len(recs)).Msg("stuck handler returned")
	}
	for i, rec := range recs {
		r.settle(ctx, rec, errs[i])
	}
}

// apply runs the handler on a batch, each attempt under HandlerTimeout,
// and returns one error per item. A panic is an error too: one poison
// event must not take the batch, nor the worker, with it.
func (r *Runner) apply(ctx context.Context, recs []received, items []Item) []error {
	hctx := r.log.WithContext(ctx)
	if len(recs) == 1 {
		hctx = recs[0].log.WithContext(ctx)
	}
	hctx, cancel := context.WithTimeout(hctx, r.cfg.HandlerTimeout)
	errs, panicked := r.callHandler(hctx, items)
	cancel()
	if panicked == nil {
		return errs
	}
	if len(items) == 1 {
		return []error{Permanent(fmt.Errorf("handler panicked: %v", panicked))}
	}
	// Find the poison event by handling the events one by one.
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
	return errs
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

// deadLetter records the dead letter, then terminates the message. Until
// the dead letter is written the message stays alive: the write is retried
// in process (the heartbeat keeps the message), and if the runner stops
// first the message is handed back (Nak) for another worker, whose
// handler reports the failure again (see Handler). On its last delivery
// JetStream then publishes the max-deliveries advisory instead, which
// WatchMaxDeliveries records from the advisory stream.
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
	if d.Payload == nil {
		d.Payload = []byte{}
	}
	if err := r.recordDeadLetter(ctx, log, d); err != nil {
		r.metrics.observe(r.cfg.Consumer, outcomeRetry)
		log.Error().Err(err).AnErr("cause", cause).
			Msg("dead letter not recorded before the worker stopped; the event is handed back, not terminated")
		if nakErr := msg.Nak(); nakErr != nil {
			log.Warn().Err(nakErr).Msg("nak failed; the event will be redelivered after the ack wait")
		}
		return
	}
	r.metrics.observe(r.cfg.Consumer, outcomeDeadLetter)
	log.Error().Err(cause).Msg("event dead-lettered")
	if err := msg.TermWithReason(truncate(cause.Error(), 200)); err != nil {
		log.Warn().Err(err).Msg("term failed; a redelivery will be dead-lettered again and de-duplicated")
	}
}

// recordDeadLetter stores the dead letter, retrying with backoff until it
// succeeds or ctx ends (the shutdown timeout).
func (r *Runner) recordDeadLetter(ctx context.Context, log zerolog.Logger, d store.DeadLetter) error {
	wait := r.cfg.RetryBase
	for {
		wctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err := r.deadLetters.InsertDeadLetter(wctx, d)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Error().Err(err).Dur("retry_in", wait).Msg("record dead letter failed; retrying, the event stays in progress")
		sleepCtx(ctx, wait)
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
