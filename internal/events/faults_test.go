package events_test

// Regression tests of issue 10: the runner under slow handlers, hung
// handlers, a failing dead-letter table, missed advisories and shutdown.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/store"
)

// flakyDeadLetters fails the first `fail` inserts, as a database that is
// down for a while would.
type flakyDeadLetters struct {
	store    *store.Store
	fail     int32
	attempts atomic.Int32
}

func (f *flakyDeadLetters) InsertDeadLetter(ctx context.Context, d store.DeadLetter) error {
	if f.attempts.Add(1) <= f.fail {
		return errors.New("injected: connection refused")
	}
	return f.store.InsertDeadLetter(ctx, d)
}

func (h *harness) consumerWith(t *testing.T, name string, ackWait time.Duration, maxDeliver int, types ...string) jetstream.Consumer {
	t.Helper()
	c, err := events.EnsureConsumer(context.Background(), h.stream, events.ConsumerSpec{
		Name: name, Types: types, AckWait: ackWait, MaxDeliver: maxDeliver,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs r until the returned stop is called (or the test ends); stop
// cancels Run's context and returns Run's error, failing the test if Run
// does not return within limit.
func start(t *testing.T, r *events.Runner, limit time.Duration) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(limit):
				t.Errorf("Run did not return within %v of being stopped", limit)
				runErr = errors.New("not stopped")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (h *harness) publishN(t *testing.T, typ string, n int) []events.Event {
	t.Helper()
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = newEvent(t, typ, map[string]int{"i": i})
		if _, err := h.pub.Publish(context.Background(), evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

// Fault 4: a handler that works longer than the ack wait (the mailer keeps
// sending past its deadline on purpose) keeps its messages: they are not
// redelivered to another slot while it runs, so no attempt is burnt and no
// false "being sent by another worker" dead letter appears.
func TestSlowHandlerKeepsItsMessages(t *testing.T) {
	h := newHarness(t)
	const ackWait, maxDeliver = 2 * time.Second, 2
	c := h.consumerWith(t, "mailer", ackWait, maxDeliver, events.TypeMailRequested)
	var mu sync.Mutex
	running := map[string]bool{}
	calls := map[string]int{}
	r := events.NewRunner(c, func(_ context.Context, e events.Event) error {
		mu.Lock()
		calls[e.ID]++
		if running[e.ID] {
			mu.Unlock()
			return errors.New("being sent by another worker")
		}
		running[e.ID] = true
		mu.Unlock()
		// Like an SMTP exchange, not cut short by the handler's deadline.
		time.Sleep(ackWait*2 + ackWait/2)
		mu.Lock()
		running[e.ID] = false
		mu.Unlock()
		return nil
	}, h.store, nil, h.log, events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: maxDeliver, Concurrency: 8, HandlerTimeout: ackWait * 4 / 5,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second,
	})
	start(t, r, 15*time.Second)
	evs := h.publishN(t, events.TypeMailRequested, 4)
	waitFor(t, "every event acked", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream == uint64(len(evs)) && info.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, e := range evs {
		if calls[e.ID] != 1 {
			t.Errorf("event %s handled %d times, want 1", e.ID, calls[e.ID])
		}
	}
	if letters, err := h.store.ListDeadLetters(context.Background(), nil, 10); err != nil || len(letters) != 0 {
		t.Fatalf("dead letters = %+v, %v; want none", letters, err)
	}
}

// Fault 1 (the runner's part): a handler that never returns is detected and
// gives its slot back, so the other events keep flowing.
func TestHungHandlerGivesItsSlotBack(t *testing.T) {
	h := newHarness(t)
	c := h.consumerWith(t, "mailer", 30*time.Second, 3, events.TypeMailRequested)
	release := make(chan struct{})
	var hung atomic.Bool
	var handled sync.Map
	r := events.NewRunner(c, func(_ context.Context, e events.Event) error {
		if hung.CompareAndSwap(false, true) {
			<-release // a lost PubAck, waited for without a deadline
		}
		handled.Store(e.ID, true)
		return nil
	}, h.store, nil, h.log, events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 3, Concurrency: 1, HandlerTimeout: 100 * time.Millisecond,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ShutdownTimeout: time.Second,
	})
	stop := start(t, r, 10*time.Second)
	t.Cleanup(func() { close(release) })
	evs := h.publishN(t, events.TypeMailRequested, 3)
	defer func() {
		if t.Failed() {
			t.Log(h.sink.String())
		}
	}()
	waitFor(t, "the events behind the hung one", func() bool {
		_, b := handled.Load(evs[1].ID)
		_, c := handled.Load(evs[2].ID)
		return b && c
	})
	if !h.sink.Contains("handler stuck") {
		t.Errorf("no log says a handler is stuck:\n%s", h.sink.String())
	}
	_ = stop()
}

// Handlers that hang again and again (more than there are slots) make Run
// fail, so the process is restarted instead of piling up stuck goroutines.
func TestRunFailsWhenHandlersKeepHanging(t *testing.T) {
	h := newHarness(t)
	c := h.consumerWith(t, "mailer", 30*time.Second, 3, events.TypeMailRequested)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	r := events.NewRunner(c, func(context.Context, events.Event) error {
		<-release
		return nil
	}, h.store, nil, h.log, events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 3, Concurrency: 1, HandlerTimeout: 50 * time.Millisecond,
		ShutdownTimeout: 100 * time.Millisecond,
	})
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	h.publishN(t, events.TypeMailRequested, 2)
	select {
	case err := <-done:
		if !errors.Is(err, events.ErrHandlersStuck) {
			t.Fatalf("Run = %v, want ErrHandlersStuck", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run kept going with every handler stuck")
	}
}

// Fault 1: shutdown is bounded by ShutdownTimeout even when a handler
// ignores its context; its message is redelivered later.
func TestShutdownIsBoundedWhenHandlerIgnoresItsContext(t *testing.T) {
	h := newHarness(t)
	c := h.consumerWith(t, "mailer", 30*time.Second, 3, events.TypeMailRequested)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	r := events.NewRunner(c, func(context.Context, events.Event) error {
		started <- struct{}{}
		<-release
		return nil
	}, h.store, nil, h.log, events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 3, ShutdownTimeout: 300 * time.Millisecond,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
	})
	stop := start(t, r, 10*time.Second)
	t.Cleanup(func() { close(release) })
	h.publishN(t, events.TypeMailRequested, 1)
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("handler never started")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !h.sink.Contains("shutdown timeout") {
		t.Errorf("no log says the shutdown timed out:\n%s", h.sink.String())
	}
}

// Fault 5, runner path: a permanent failure whose dead letter cannot be
// written keeps its message alive until the dead letter is recorded, even
// when a redelivery would find the effect finished and ack it (as the
// mailer does for a delivery already marked failed).
func TestDeadLetterInsertFailureKeepsTheMessage(t *testing.T) {
	h := newHarness(t)
	c := h.consumer(t, "mailer", 5, events.TypeMailRequested)
	flaky := &flakyDeadLetters{store: h.store, fail: 3}
	var calls atomic.Int32
	r := events.NewRunner(c, func(context.Context, events.Event) error {
		if calls.Add(1) == 1 {
			return events.Permanent(errors.New("smtp: 550 mailbox unavailable"))
		}
		return nil // "delivery already finished; not sending"
	}, flaky, nil, h.log, events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 5, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
	})
	start(t, r, 10*time.Second)
	e := h.publishN(t, events.TypeMailRequested, 1)[0]
	waitFor(t, "the dead letter once the database is back", func() bool {
		l, err := h.store.ListDeadLetters(context.Background(), nil, 10)
		return err == nil && len(l) == 1 && l[0].EventID == e.ID && strings.Contains(l[0].Reason, "550")
	})
	waitFor(t, "the message terminated", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == 1
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}

// A dead letter still unwritten when the runner stops is not lost either:
// the message is handed back, and on its last delivery JetStream's
// max-deliveries advisory, kept in the advisory stream, is recorded once a
// worker is back.
func TestDeadLetterUnwrittenAtShutdownIsRecordedLater(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.consumer(t, "mailer", 1, events.TypeMailRequested)
	down := &flakyDeadLetters{store: h.store, fail: 1 << 30}
	handler := func(context.Context, events.Event) error {
		return events.Permanent(errors.New("smtp: 550 mailbox unavailable"))
	}
	cfg := events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 1, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		ShutdownTimeout: 300 * time.Millisecond,
	}
	stop := start(t, events.NewRunner(c, handler, down, nil, h.log, cfg), 10*time.Second)
	e := h.publishN(t, events.TypeMailRequested, 1)[0]
	waitFor(t, "failed dead-letter writes", func() bool { return down.attempts.Load() >= 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	wctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- events.WatchMaxDeliveries(wctx, h.nc, h.stream, h.store, h.log) }()
	t.Cleanup(func() { cancel(); <-watchDone })
	start(t, events.NewRunner(c, handler, h.store, nil, h.log, cfg), 10*time.Second)
	waitFor(t, "the dead letter", func() bool {
		l, err := h.store.ListDeadLetters(ctx, nil, 10)
		return err == nil && len(l) == 1 && l[0].EventID == e.ID
	})
}

// exhaust delivers the consumer's first message maxDeliver times without an
// answer, as a worker crashing on it every time would, then makes one more
// pull so the server notices and publishes the max-deliveries advisory.
func exhaust(t *testing.T, c jetstream.Consumer, maxDeliver int) {
	t.Helper()
	for range maxDeliver {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range batch.Messages() {
			n++
		}
		if n != 1 {
			t.Fatalf("fetched %d messages, want 1", n)
		}
	}
	if batch, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for m := range batch.Messages() {
			t.Errorf("message delivered past MaxDeliver: %s", m.Subject())
		}
	}
}

// Fault 5, advisory path: a max-deliveries advisory published while no
// watcher runs becomes a dead letter when one starts.
func TestAdvisoryWhileNoWatcherRunsIsReconciledAtStart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.consumerWith(t, "campaigns", 200*time.Millisecond, 2, events.TypeCampaignStarted)
	e := h.publishN(t, events.TypeCampaignStarted, 1)[0]
	exhaust(t, c, 2)
	time.Sleep(100 * time.Millisecond) // let the advisory go out to nobody

	wctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- events.WatchMaxDeliveries(wctx, h.nc, h.stream, h.store, h.log) }()
	t.Cleanup(func() { cancel(); <-watchDone })
	waitFor(t, "a dead letter from the stored advisory", func() bool {
		l, err := h.store.ListDeadLetters(ctx, nil, 10)
		return err == nil && len(l) == 1 && l[0].EventID == e.ID && l[0].Consumer == "campaigns" && l[0].Attempts == 2
	})
}

// Fault 5, advisory path: an advisory whose dead letter cannot be written is
// retried, not dropped.
func TestAdvisoryInsertFailureIsRetried(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	flaky := &flakyDeadLetters{store: h.store, fail: 2}
	watchDone := make(chan error, 1)
	go func() { watchDone <- events.WatchMaxDeliveries(ctx, h.nc, h.stream, flaky, h.log) }()
	t.Cleanup(func() { cancel(); <-watchDone })
	time.Sleep(200 * time.Millisecond) // the watcher is listening

	c := h.consumerWith(t, "campaigns", 200*time.Millisecond, 2, events.TypeCampaignStarted)
	e := h.publishN(t, events.TypeCampaignStarted, 1)[0]
	exhaust(t, c, 2)
	waitFor(t, "a dead letter once the database is back", func() bool {
		l, err := h.store.ListDeadLetters(ctx, nil, 10)
		return err == nil && len(l) == 1 && l[0].EventID == e.ID
	})
	if n := flaky.attempts.Load(); n < 3 {
		t.Fatalf("%d insert attempts, want the 2 failures and a success", n)
	}
}

// Fault 6: a stopping runner leaves no message stranded in its buffer: the
// next worker gets every message the first did not handle at once, not after
// the ack wait, and as a first attempt.
func TestStoppedRunnerStrandsNoMessage(t *testing.T) {
	h := newHarness(t)
	const ackWait = time.Minute // far beyond the waits below
	c := h.consumerWith(t, "mailer", ackWait, 5, events.TypeMailRequested)
	release := make(chan struct{})
	var mu sync.Mutex
	first := map[string]bool{}
	cfg := events.RunnerConfig{
		Consumer: "mailer", MaxDeliver: 5, Concurrency: 2, BatchSize: 2, ShutdownTimeout: 5 * time.Second,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
	}
	r1 := events.NewBatchRunner(c, func(_ context.Context, items []events.Item) []error {
		mu.Lock()
		for _, it := range items {
			first[it.Event.ID] = true
		}
		mu.Unlock()
		<-release
		return make([]error, len(items))
	}, h.store, nil, h.log, cfg)
	evs := h.publishN(t, events.TypeMailRequested, 10)
	stop1 := start(t, r1, 10*time.Second)
	waitFor(t, "both slots busy", func() bool { mu.Lock(); defer mu.Unlock(); return len(first) == 4 })
	time.Sleep(300 * time.Millisecond) // room for the client to pull ahead
	stopped := make(chan error, 1)
	go func() { stopped <- stop1() }()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("first runner: %v", err)
	}

	var second sync.Map // event id → attempt
	r2 := events.NewBatchRunner(c, func(_ context.Context, items []events.Item) []error {
		for _, it := range items {
			second.Store(it.Event.ID, it.Attempt)
		}
		return make([]error, len(items))
	}, h.store, nil, h.log, cfg)
	start(t, r2, 10*time.Second)
	waitFor(t, "the second runner handling the rest", func() bool {
		n := 0
		second.Range(func(any, any) bool { n++; return true })
		return n == len(evs)-4
	})
	mu.Lock()
	defer mu.Unlock()
	if len(first) != 4 {
		t.Fatalf("first runner handled %d events, want 4", len(first))
	}
	for _, e := range evs {
		attempt, ok := second.Load(e.ID)
		if first[e.ID] == ok {
			t.Errorf("event %s: handled by the first runner %v, by the second %v; want exactly one", e.ID, first[e.ID], ok)
		}
		if ok && attempt.(int) != 1 {
			t.Errorf("event %s reached the second runner as attempt %d, want 1 (it was never worked on)", e.ID, attempt)
		}
	}
}
