package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/outbox"
	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A process committed two events and died before publishing them; one of
// them is malformed. The relay publishes the good one and sets the bad one
// aside instead of retrying it forever.
func TestRelayPublishesWhatACrashLeftBehind(t *testing.T) {
	ctx := context.Background()
	db := testkit.NewDB(t)
	n := testkit.NewNATS(t)
	_, js := n.Connect(t)
	stream, err := events.EnsureStream(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db.Pool)
	log, _ := testkit.NewLogger(t)
	ob := outbox.New(st, events.NewPublisher(js), log)

	good, err := events.New("test", events.TypePasswordChanged, "u", map[string]string{"user_id": "x"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = st.InTx(ctx, func(tx pgx.Tx) error {
		if err := ob.Add(ctx, tx, good); err != nil {
			return err
		}
		bad, _ := json.Marshal(map[string]string{"not": "an event"})
		return st.InsertOutbox(ctx, tx, store.OutboxEvent{EventID: "broken", Subject: "latchkey.password.changed", Payload: bad})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Too fresh: the request that wrote them may still be publishing.
	if got, err := ob.RelayOnce(ctx, time.Now().Add(-time.Minute)); err != nil || got != 0 {
		t.Fatalf("relay of fresh rows = %d, %v", got, err)
	}
	got, err := ob.RelayOnce(ctx, time.Now().Add(time.Second))
	if err != nil || got != 2 {
		t.Fatalf("relay = %d, %v; want 2 rows handled", got, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream has %d messages, want the one good event", info.State.Msgs)
	}
	msg, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := events.Decode(msg.Subject, msg.Data); err != nil || e.ID != good.ID {
		t.Fatalf("published %v, %v", e.ID, err)
	}
	if again, err := ob.RelayOnce(ctx, time.Now().Add(time.Second)); err != nil || again != 0 {
		t.Fatalf("second relay = %d, %v; want nothing left", again, err)
	}
	// The published event was deleted on its acknowledgement; the malformed
	// one is kept a day, then pruned.
	if pruned, err := st.PruneOutbox(ctx, time.Now().Add(time.Minute)); err != nil || pruned != 1 {
		t.Fatalf("pruned %d, %v; want the malformed event only", pruned, err)
	}
}
