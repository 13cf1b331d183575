package events_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	store  *store.Store
	pub    *events.Publisher
	log    zerolog.Logger
	sink   *testkit.LogSink
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	n := testkit.NewNATS(t)
	nc, js := n.Connect(t)
	stream, err := events.EnsureStream(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	db := testkit.NewDB(t)
	log, sink := testkit.NewLogger(t)
	return &harness{nc: nc, js: js, stream: stream, store: store.New(db.Pool), pub: events.NewPublisher(js), log: log, sink: sink}
}

func (h *harness) consumer(t *testing.T, name string, maxDeliver int, types ...string) jetstream.Consumer {
	t.Helper()
	c, err := events.EnsureConsumer(context.Background(), h.stream, events.ConsumerSpec{
		Name: name, Types: types, AckWait: 5 * time.Second, MaxDeliver: maxDeliver,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run starts a runner and stops it when the test ends.
func (h *harness) run(t *testing.T, c jetstream.Consumer, name string, maxDeliver int, handler events.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := events.NewRunner(c, handler, h.store, nil, h.log, events.RunnerConfig{
		Consumer: name, MaxDeliver: maxDeliver, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
	})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
}

func newEvent(t *testing.T, typ string, data any) events.Event {
	t.Helper()
	e, err := events.New("test", typ, "subject-1", data, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnsureStreamAndConsumerAreIdempotent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for range 3 {
		if _, err := events.EnsureStream(ctx, h.js, events.StreamConfig{}); err != nil {
			t.Fatalf("second EnsureStream: %v", err)
		}
		h.consumer(t, "tokens", 4, events.TypeResetRequested, events.TypeWelcomeRequested)
	}
	names := h.js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	slices.Sort(streams)
	if want := []string{events.StreamName, events.AdvisoryStreamName}; !slices.Equal(streams, want) {
		t.Fatalf("streams = %v, want exactly %v", streams, want)
	}
	info, err := h.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.FileStorage || info.Config.Subjects[0] != "latchkey.>" {
		t.Fatalf("stream config = %+v", info.Config)
	}
	cinfo, err := h.stream.Consumer(ctx, "tokens")
	if err != nil {
		t.Fatal(err)
	}
	ci, _ := cinfo.Info(ctx)
	if ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.Config.MaxDeliver != 4 || len(ci.Config.FilterSubjects) != 2 {
		t.Fatalf("consumer config = %+v", ci.Config)
	}
	// A changed stream setting is applied, not skipped as "already there".
	if _, err := events.EnsureStream(ctx, h.js, events.StreamConfig{MaxAge: 48 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if info, err := h.stream.Info(ctx); err != nil || info.Config.MaxAge != 48*time.Hour {
		t.Fatalf("MaxAge after update = %v (%v), want 48h", info.Config.MaxAge, err)
	}
	// A changed setting is applied to the existing consumer, not refused.
	h.consumer(t, "tokens", 6, events.TypeResetRequested, events.TypeWelcomeRequested)
	ci, _ = cinfo.Info(ctx)
	if ci.Config.MaxDeliver != 6 {
		t.Fatalf("MaxDeliver after update = %d, want 6", ci.Config.MaxDeliver)
	}
}

func TestPublishConsumeAck(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "mailer", 3, events.TypeMailRequested)
	var mu sync.Mutex
	var got []events.Event
	h.run(t, c, "mailer", 3, func(_ context.Context, e events.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e)
		return nil
	})
	sent := newEvent(t, events.TypeMailRequested, map[string]string{"template": "welcome"})
	if dup, err := h.pub.Publish(context.Background(), sent); err != nil || dup {
		t.Fatalf("publish: dup=%v err=%v", dup, err)
	}
	waitFor(t, "the event", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	mu.Lock()
	e := got[0]
	mu.Unlock()
	if e.ID != sent.ID || e.Type != sent.Type || e.SpecVersion != "1.0" || e.Source != "test" {
		t.Fatalf("received %+v, want %+v", e, sent)
	}
	var data map[string]string
	if err := e.DecodeData(&data); err != nil || data["template"] != "welcome" {
		t.Fatalf("data = %v, %v", data, err)
	}
	waitFor(t, "the ack", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == 1
	})
}

func TestDuplicateMessageIDIsDropped(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	e := newEvent(t, events.TypeResetRequested, map[string]string{"identifier": "1001@acme"})
	if dup, err := h.pub.Publish(ctx, e); err != nil || dup {
		t.Fatalf("first publish: dup=%v err=%v", dup, err)
	}
	dup, err := h.pub.Publish(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if !dup {
		t.Fatal("second publish with the same id was not reported as a duplicate")
	}
	info, err := h.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestNakIsRedelivered(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "notifier", 5, events.TypePasswordChanged)
	var attempts atomic.Int32
	done := make(chan struct{})
	h.run(t, c, "notifier", 5, func(_ context.Context, e events.Event) error {
		if attempts.Add(1) < 3 {
			return errors.New("smtp: 451 try again later")
		}
		close(done)
		return nil
	})
	if _, err := h.pub.Publish(context.Background(), newEvent(t, events.TypePasswordChanged, map[string]string{})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("event handled %d times, never succeeded", attempts.Load())
	}
	if n := attempts.Load(); n != 3 {
		t.Fatalf("attempts = %d, want 3", n)
	}
	letters, err := h.store.ListDeadLetters(context.Background(), nil, 10)
	if err != nil || len(letters) != 0 {
		t.Fatalf("dead letters = %v, %v; want none", letters, err)
	}
}

func TestPastMaxDeliverBecomesDeadLetter(t *testing.T) {
	h := newHarness(t)
	const maxDeliver = 3
	c := h.consumer(t, "mailer", maxDeliver, events.TypeMailRequested)
	var attempts atomic.Int32
	h.run(t, c, "mailer", maxDeliver, func(context.Context, events.Event) error {
		attempts.Add(1)
		return errors.New("smtp: 421 service not available")
	})
	e := newEvent(t, events.TypeMailRequested, map[string]string{"to": "x"})
	if _, err := h.pub.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	var letters []store.DeadLetter
	waitFor(t, "a dead letter", func() bool {
		var err error
		letters, err = h.store.ListDeadLetters(context.Background(), nil, 10)
		return err == nil && len(letters) == 1
	})
	d := letters[0]
	if d.EventID != e.ID || d.EventType != e.Type || d.Consumer != "mailer" || d.Attempts != maxDeliver {
		t.Fatalf("dead letter = %+v", d)
	}
	if want := "gave up after 3 attempts: smtp: 421 service not available"; d.Reason != want {
		t.Fatalf("reason = %q, want %q", d.Reason, want)
	}
	// Terminated: no fourth attempt, however long we wait for one.
	time.Sleep(300 * time.Millisecond)
	if n := attempts.Load(); n != maxDeliver {
		t.Fatalf("attempts = %d, want %d", n, maxDeliver)
	}
}

func TestPermanentFailureIsDeadLetteredWithoutRetry(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "mailer", 5, events.TypeMailRequested)
	var attempts atomic.Int32
	h.run(t, c, "mailer", 5, func(context.Context, events.Event) error {
		attempts.Add(1)
		return events.Permanent(errors.New("smtp: 550 mailbox unavailable"))
	})
	if _, err := h.pub.Publish(context.Background(), newEvent(t, events.TypeMailRequested, map[string]string{})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a dead letter", func() bool {
		l, err := h.store.ListDeadLetters(context.Background(), nil, 10)
		return err == nil && len(l) == 1 && l[0].Attempts == 1
	})
	time.Sleep(200 * time.Millisecond)
	if n := attempts.Load(); n != 1 {
		t.Fatalf("attempts = %d, want 1", n)
	}
}

func TestMalformedEventIsDeadLettered(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "tokens", 5, events.TypeResetRequested)
	var called atomic.Bool
	h.run(t, c, "tokens", 5, func(context.Context, events.Event) error { called.Store(true); return nil })
	// A portal backend publishing garbage must not wedge the worker.
	if _, err := h.js.Publish(context.Background(), "latchkey.reset.requested", []byte(`{"not":"a cloudevent"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a dead letter", func() bool {
		l, err := h.store.ListDeadLetters(context.Background(), nil, 10)
		return err == nil && len(l) == 1
	})
	if called.Load() {
		t.Fatal("handler saw a malformed event")
	}
}

func TestHandlerPanicIsDeadLetteredAndWorkerSurvives(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "tokens", 5, events.TypeResetRequested)
	var handled atomic.Int32
	h.run(t, c, "tokens", 5, func(_ context.Context, e events.Event) error {
		var d map[string]string
		_ = e.DecodeData(&d)
		if d["poison"] == "yes" {
			panic("boom")
		}
		handled.Add(1)
		return nil
	})
	ctx := context.Background()
	if _, err := h.pub.Publish(ctx, newEvent(t, events.TypeResetRequested, map[string]string{"poison": "yes"})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pub.Publish(ctx, newEvent(t, events.TypeResetRequested, map[string]string{"poison": "no"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the good event and the dead letter", func() bool {
		l, err := h.store.ListDeadLetters(ctx, nil, 10)
		return err == nil && len(l) == 1 && handled.Load() == 1
	})
}

func TestCrashedDeliveriesBecomeDeadLetterViaAdvisory(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- events.WatchMaxDeliveries(ctx, h.nc, h.stream, h.store, h.log) }()
	t.Cleanup(func() { cancel(); <-watchDone })

	c, err := events.EnsureConsumer(ctx, h.stream, events.ConsumerSpec{
		Name: "campaigns", Types: []string{events.TypeCampaignStarted}, AckWait: 200 * time.Millisecond, MaxDeliver: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEvent(t, events.TypeCampaignStarted, map[string]string{})
	if _, err := h.pub.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	// A worker that takes the message and dies before answering, twice.
	for range 2 {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range batch.Messages() {
		}
	}
	// The server notices the exhausted message while serving the next pull
	// request, which a live worker always has outstanding.
	if batch, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for m := range batch.Messages() {
			t.Errorf("message delivered past MaxDeliver: %s", m.Subject())
		}
	}
	waitFor(t, "a dead letter from the advisory", func() bool {
		l, err := h.store.ListDeadLetters(ctx, nil, 10)
		return err == nil && len(l) == 1 && l[0].EventID == e.ID && l[0].Consumer == "campaigns"
	})
}

func (h *harness) runBatch(t *testing.T, c jetstream.Consumer, name string, handler events.BatchHandler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := events.NewBatchRunner(c, handler, h.store, nil, h.log, events.RunnerConfig{
		Consumer: name, MaxDeliver: 3, BatchSize: 10, Concurrency: 2,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
	})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
}

// A backlog is handed over in batches, each event once, and each event's
// outcome is its own: one permanent failure and one panic in a batch do not
// touch the other events.
func TestBatchRunner(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const n = 40
	for i := range n {
		kind := "ok"
		switch i {
		case 7:
			kind = "fail"
		case 23:
			kind = "panic"
		}
		if _, err := h.pub.Publish(ctx, newEvent(t, events.TypeMailRequested, map[string]any{"i": i, "kind": kind})); err != nil {
			t.Fatal(err)
		}
	}
	c := h.consumer(t, "mailer", 3, events.TypeMailRequested)
	var mu sync.Mutex
	handled := map[int]int{}
	largest := 0
	h.runBatch(t, c, "mailer", func(_ context.Context, items []events.Item) []error {
		errs := make([]error, len(items))
		for i, it := range items {
			var d struct {
				I    int
				Kind string
			}
			_ = it.Event.DecodeData(&d)
			if d.Kind == "panic" {
				panic("poison")
			}
			if d.Kind == "fail" {
				errs[i] = events.Permanent(errors.New("refused"))
			}
		}
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, len(items))
		for i, it := range items {
			var d struct{ I int }
			_ = it.Event.DecodeData(&d)
			if errs[i] == nil {
				handled[d.I]++
			}
		}
		return errs
	})
	waitFor(t, "every event settled", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream == n && info.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if largest < 2 {
		t.Fatalf("the backlog was handled one by one (largest batch %d)", largest)
	}
	for i := range n {
		want := 1
		if i == 7 || i == 23 {
			want = 0
		}
		if handled[i] != want {
			t.Errorf("event %d handled %d times, want %d", i, handled[i], want)
		}
	}
	letters, err := h.store.ListDeadLetters(ctx, nil, 10)
	if err != nil || len(letters) != 2 {
		t.Fatalf("dead letters = %v, %v; want the failing and the panicking event", letters, err)
	}
}

// A runner whose consumer disappears while it was not asked to stop must
// fail, so the process exits and is restarted instead of idling.
func TestRunFailsWhenItsConsumerIsDeleted(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "mailer", 3, events.TypeMailRequested)
	r := events.NewRunner(c, func(context.Context, events.Event) error { return nil }, h.store, nil, h.log,
		events.RunnerConfig{Consumer: "mailer", MaxDeliver: 3})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- r.Run(ctx) }()
	time.Sleep(200 * time.Millisecond)
	if err := h.stream.DeleteConsumer(context.Background(), "mailer"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil after its consumer was deleted")
		}
	case <-time.After(15 * time.Second):
		cancel()
		<-done
		t.Fatal("Run kept running without a consumer")
	}
}
