package events

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/store"
)

// maxDeliveriesAdvisory is what JetStream publishes when a consumer stops
// redelivering a message because every attempt timed out (a worker crashed
// or hung each time). The runner cannot see those, so this watcher records
// them as dead letters.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// WatchMaxDeliveries records a dead letter for every max-deliveries advisory
// of the stream until ctx ends. Several processes may watch at once: a dead
// letter is stored once per consumer and stream sequence.
func WatchMaxDeliveries(ctx context.Context, nc *nats.Conn, stream jetstream.Stream, deadLetters DeadLetterStore, log zerolog.Logger) error {
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + StreamName + ".*"
	msgs := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(subject, msgs)
	if err != nil {
		return fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			var adv maxDeliveriesAdvisory
			if err := json.Unmarshal(m.Data, &adv); err != nil {
				log.Warn().Err(err).Msg("unreadable max-deliveries advisory")
				continue
			}
			if err := recordAdvisory(ctx, stream, deadLetters, adv); err != nil {
				log.Error().Err(err).Uint64("stream_seq", adv.StreamSeq).Str("consumer", adv.Consumer).
					Msg("record dead letter from advisory")
			}
		}
	}
}

func recordAdvisory(ctx context.Context, stream jetstream.Stream, deadLetters DeadLetterStore, adv maxDeliveriesAdvisory) error {
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		return fmt.Errorf("read message %d: %w", adv.StreamSeq, err)
	}
	d := store.DeadLetter{
		Consumer:       adv.Consumer,
		StreamSequence: adv.StreamSeq,
		Subject:        raw.Subject,
		Payload:        raw.Data,
		Reason:         fmt.Sprintf("no acknowledgement after %d deliveries (worker crashed or timed out)", adv.Deliveries),
		Attempts:       adv.Deliveries,
	}
	if e, err := Decode(raw.Subject, raw.Data); err == nil {
		d.EventID, d.EventType = e.ID, e.Type
	} else {
		d.EventID = raw.Header.Get(jetstream.MsgIDHeader)
	}
	return deadLetters.InsertDeadLetter(ctx, d)
}
