package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/store"
)

// AdvisoryStreamName is the stream that keeps JetStream's max-deliveries
// advisories about the events stream until a worker has recorded each as a
// dead letter. JetStream publishes an advisory once, on core NATS; kept in
// a stream, one published while no worker listens (or whose dead letter
// could not be written) is not lost but handled when a worker is back.
const AdvisoryStreamName = StreamName + "_ADVISORIES"

// advisoryConsumer is the durable consumer of the advisory stream that every
// worker process shares.
const advisoryConsumer = "dead-letters"

// maxDeliveriesSubject is where JetStream publishes the advisory of a
// consumer of the events stream (the last token is the consumer's name).
const maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + StreamName + ".*"

// advisoryStreamConfig derives the advisory stream's settings from the
// events stream's: an advisory is kept as long as the event it is about.
func advisoryStreamConfig(events jetstream.StreamConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AdvisoryStreamName,
		Description: "Max-deliveries advisories of " + StreamName + ", until recorded as dead letters",
		Subjects:    []string{maxDeliveriesSubject},
		// Work-queue retention: an advisory is deleted once recorded.
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   events.Replicas,
		MaxAge:     events.MaxAge,
		Duplicates: 2 * time.Minute,
		Discard:    jetstream.DiscardOld,
	}
}

// maxDeliveriesAdvisory is what JetStream publishes when a consumer stops
// redelivering a message because every attempt timed out (a worker crashed
// or hung each time) or the last one was handed back. The runner cannot see
// those, so this watcher records them as dead letters.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// WatchMaxDeliveries records a dead letter for every max-deliveries advisory
// of the events stream until ctx ends, including those published before it
// started (they wait in the advisory stream). An advisory is removed only
// once its dead letter is written; a failed write is retried with backoff.
// Several processes may watch at once: they share one durable consumer, and
// a dead letter is stored once per consumer and stream sequence. It returns
// an error only when the advisory consumer cannot be created or disappears.
func WatchMaxDeliveries(ctx context.Context, nc *nats.Conn, stream jetstream.Stream, deadLetters DeadLetterStore, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("watch max-deliveries advisories: %w", err)
	}
	eventsCfg := jetstream.StreamConfig{Replicas: 1, MaxAge: 7 * 24 * time.Hour}
	if info := stream.CachedInfo(); info != nil {
		eventsCfg = info.Config
	}
	advisories, err := ensureStream(ctx, js, advisoryStreamConfig(eventsCfg))
	if err != nil {
		return fmt.Errorf("watch max-deliveries advisories: %w", err)
	}
	consumer, err := advisories.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       advisoryConsumer,
		Description:   "Latchkey: record max-deliveries advisories as dead letters",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1, // an advisory is retried until its dead letter is written
		Replicas:      eventsCfg.Replicas,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch max-deliveries advisories: %w", err)
	}
	w := &advisoryWatcher{stream: stream, deadLetters: deadLetters, log: log.With().Str("consumer", advisoryConsumer).Logger()}
	for ctx.Err() == nil {
		msgs, err := pull(ctx, consumer, 16)
		if ctx.Err() != nil {
			release(msgs)
			return nil
		}
		if err != nil {
			if gone := consumerGone(ctx, consumer, advisoryConsumer, err); gone != nil {
				return gone
			}
			w.log.Warn().Err(err).Msg("pull max-deliveries advisories")
			sleepCtx(ctx, time.Second)
			continue
		}
		for i, m := range msgs {
			if ctx.Err() != nil {
				release(msgs[i:])
				return nil
			}
			w.handle(ctx, m)
		}
	}
	return nil
}

type advisoryWatcher struct {
	stream      jetstream.Stream
	deadLetters DeadLetterStore
	log         zerolog.Logger
}

// handle records one advisory's dead letter and acks it, or leaves it for
// a later attempt.
func (w *advisoryWatcher) handle(ctx context.Context, m jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		w.log.Warn().Err(err).Str("subject", m.Subject()).Msg("unreadable max-deliveries advisory; dropped")
		_ = m.Term()
		return
	}
	log := w.log.With().Uint64("stream_seq", adv.StreamSeq).Str("for_consumer", adv.Consumer).Logger()
	if err := recordAdvisory(ctx, w.stream, w.deadLetters, adv); err != nil {
		attempt := 1
		if meta, merr := m.Metadata(); merr == nil {
			attempt = int(meta.NumDelivered)
		}
		delay := min(time.Second<<min(attempt-1, 6), time.Minute)
		log.Error().Err(err).Dur("retry_in", delay).Msg("record dead letter from advisory failed; will retry")
		_ = m.NakWithDelay(delay)
		return
	}
	log.Error().Int("attempts", adv.Deliveries).Msg("event dead-lettered after its last delivery went unanswered")
	if err := m.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack advisory failed; it will be recorded again and de-duplicated")
	}
}

func recordAdvisory(ctx context.Context, stream jetstream.Stream, deadLetters DeadLetterStore, adv maxDeliveriesAdvisory) error {
	d := store.DeadLetter{
		Consumer:       adv.Consumer,
		StreamSequence: adv.StreamSeq,
		Payload:        []byte{},
		Reason:         fmt.Sprintf("no acknowledgement after %d deliveries (worker crashed, hung or stopped)", adv.Deliveries),
		Attempts:       adv.Deliveries,
	}
	gctx, cancel := context.WithTimeout(ctx, storeTimeout)
	raw, err := stream.GetMsg(gctx, adv.StreamSeq)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Aged out of the stream meanwhile: record what is known.
		d.Reason += "; the event is no longer in the stream"
	case err != nil:
		return fmt.Errorf("read message %d: %w", adv.StreamSeq, err)
	default:
		d.Subject = raw.Subject
		if raw.Data != nil {
			d.Payload = raw.Data
		}
		if e, err := Decode(raw.Subject, raw.Data); err == nil {
			d.EventID, d.EventType = e.ID, e.Type
		} else {
			d.EventID = raw.Header.Get(jetstream.MsgIDHeader)
		}
	}
	ictx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	return deadLetters.InsertDeadLetter(ictx, d)
}
