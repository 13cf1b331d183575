package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/testkit"
)

// TestPublishGivesUpOnALostAck: the stream stores events but never
// acknowledges them (NoAck: to a client, a clustered stream electing a
// leader looks the same). Publish and PublishAll must give up after the ack
// timeout with ErrUnavailable even under a context that never ends; before,
// PublishAll waited forever.
func TestPublishGivesUpOnALostAck(t *testing.T) {
	ctx := context.Background()
	n := testkit.NewNATS(t)
	_, js := n.Connect(t)
	stream, err := events.EnsureStream(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.NoAck = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pub := events.NewPublisher(js)
	evs := make([]events.Event, 3)
	for i := range evs {
		if evs[i], err = events.New("test", events.TypeMailDelivered, "", map[string]int{"n": i}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan []error, 1)
	go func() {
		errs := pub.PublishAll(ctx, evs[:2])
		_, err := pub.Publish(ctx, evs[2])
		done <- append(errs, err)
	}()
	select {
	case errs := <-done:
		for i, err := range errs {
			if !errors.Is(err, events.ErrUnavailable) {
				t.Errorf("event %d: %v, want ErrUnavailable", i, err)
			}
		}
	case <-time.After(time.Minute):
		t.Fatal("publishing still waits for acknowledgements that never come")
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d events, want the 3 whose acknowledgements were lost", info.State.Msgs)
	}
}
