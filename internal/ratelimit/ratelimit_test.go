package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/periodic"
	"github.com/latchkey/latchkey/internal/ratelimit"
	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func allow(t *testing.T, l *ratelimit.Limiter, key string) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBurstThenRefillAtTheRate(t *testing.T) {
	st := store.New(testkit.NewDB(t).Pool)
	c := newClock()
	l := ratelimit.New(st, "account", 5, 15*time.Minute, c.now)
	for i := range 5 {
		if d := allow(t, l, "acct"); !d.Allowed {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	d := allow(t, l, "acct")
	if d.Allowed || d.RetryAfter != 3*time.Minute {
		t.Fatalf("6th request: %+v; want refused with a wait of exactly 3m (one interval)", d)
	}
	if d := allow(t, l, "other"); !d.Allowed {
		t.Fatal("another key is limited by the first")
	}
	c.advance(d.RetryAfter - time.Second)
	if d := allow(t, l, "acct"); d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("a second before the advertised time: %+v; want refused, 1s to wait", d)
	}
	c.advance(time.Second)
	if d := allow(t, l, "acct"); !d.Allowed {
		t.Fatal("refused after waiting the advertised time")
	}
	if d := allow(t, l, "acct"); d.Allowed {
		t.Fatal("a second request right after the refill was allowed")
	}
	c.advance(15 * time.Minute)
	for i := range 5 {
		if d := allow(t, l, "acct"); !d.Allowed {
			t.Fatalf("after a full window, request %d refused", i+1)
		}
	}
}

// Two limiters on one store (the per-address and per-account ones) never
// count each other's events, even for the same key string.
func TestLimitersHaveSeparateKeys(t *testing.T) {
	st := store.New(testkit.NewDB(t).Pool)
	c := newClock()
	a := ratelimit.New(st, "address", 1, time.Hour, c.now)
	b := ratelimit.New(st, "account", 1, time.Hour, c.now)
	if !allow(t, a, "k").Allowed || !allow(t, b, "k").Allowed {
		t.Fatal("the first event of a key was refused")
	}
	if allow(t, a, "k").Allowed || allow(t, b, "k").Allowed {
		t.Fatal("a second event within the window was allowed")
	}
}

// Several ingress processes share the store: concurrent events on one key
// are allowed exactly up to the limit, whatever the interleaving.
func TestConcurrentEventsAllowExactlyTheLimit(t *testing.T) {
	db := testkit.NewDB(t)
	c := newClock()
	// Two limiters on two pools stand for two processes.
	other, err := store.Open(context.Background(), db.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	limiters := []*ratelimit.Limiter{
		ratelimit.New(store.New(db.Pool), "address", 10, 15*time.Minute, c.now),
		ratelimit.New(store.New(other), "address", 10, 15*time.Minute, c.now),
	}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 60 {
		wg.Go(func() {
			d, err := limiters[i%2].Allow(context.Background(), "203.0.113.9/32")
			if err != nil {
				errs <- err
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := allowed.Load(); n != 10 {
		t.Fatalf("%d of 60 concurrent events allowed across two processes; limit 10", n)
	}
}

// A request that queued behind others on a busy key's row lock is judged by
// when it got the lock, not refused because the others, served first,
// moved the key's TAT past its own (older) reading of the clock. Without
// this, a flood of one key on a loose limit refused requests it allows.
func TestQueuedRequestIsJudgedWhenItGetsTheLock(t *testing.T) {
	db := testkit.NewDB(t)
	ctx := context.Background()
	c := newClock()
	l := ratelimit.New(store.New(db.Pool), "address", 1000, time.Second, c.now) // burst 999ms
	allow(t, l, "busy")
	// Another request holds the key's row and is about to move its TAT
	// 1.5s ahead of this clock.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT tat FROM rate_limits FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	result := make(chan ratelimit.Decision, 1)
	go func() {
		d, err := l.Allow(ctx, "busy")
		if err != nil {
			t.Error(err)
		}
		result <- d
	}()
	// Wait until the request waits for the row.
	for {
		var waiting bool
		if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%rate_limits%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tx.Exec(ctx, "UPDATE rate_limits SET tat = tat + interval '1.5 seconds'"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1600 * time.Millisecond) // the queued request's turn comes 1.6s after it asked
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if d := <-result; !d.Allowed {
		t.Fatalf("the queued request was refused (%+v): at its turn the key's TAT was within the burst", d)
	}
}

// The table never holds what a client typed: keys are SHA-256 digests.
func TestKeysAreStoredHashed(t *testing.T) {
	db := testkit.NewDB(t)
	l := ratelimit.New(store.New(db.Pool), "account", 5, time.Minute, nil)
	const typed = "id:jason@example.com"
	allow(t, l, typed)
	var key []byte
	if err := db.Pool.QueryRow(context.Background(), "SELECT key FROM rate_limits").Scan(&key); err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 || bytes.Contains(key, []byte("jason")) {
		t.Fatalf("stored key %q: want a 32-byte digest", key)
	}
}

// The sweep deletes exactly the keys whose allowance has fully recovered;
// a key still limited keeps its state (deleting it would forgive it).
func TestSweepDeletesOnlyRecoveredKeys(t *testing.T) {
	db := testkit.NewDB(t)
	st := store.New(db.Pool)
	c := newClock()
	l := ratelimit.New(st, "address", 30, 15*time.Minute, c.now) // one per 30s
	for i := range 100 {
		allow(t, l, fmt.Sprintf("once-%d", i))
	}
	for range 30 {
		allow(t, l, "burst")
	}
	c.advance(30 * time.Second)
	n, err := st.DeleteRecoveredRateLimits(context.Background(), c.now())
	if err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM rate_limits").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if n != 100 || left != 1 {
		t.Fatalf("sweep deleted %d and left %d keys; want the 100 recovered ones deleted and the burst kept", n, left)
	}
	// 30s after its burst the key has one event back, not thirty.
	if !allow(t, l, "burst").Allowed || allow(t, l, "burst").Allowed {
		t.Fatal("the key that used its burst was forgiven by the sweep")
	}
}

// A database outage refuses with store.ErrUnavailable (which the API
// answers 503), never allows.
func TestOutageIsNotAllowed(t *testing.T) {
	// Nothing listens on port 1: every connection attempt is refused.
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/latchkey?sslmode=disable&connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	l := ratelimit.New(store.New(pool), "address", 5, time.Minute, nil)
	d, err := l.Allow(context.Background(), "k")
	if !errors.Is(err, store.ErrUnavailable) || d.Allowed {
		t.Fatalf("Allow with the database down = %+v, %v; want refused with store.ErrUnavailable", d, err)
	}
}

func TestAddressKey(t *testing.T) {
	cases := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},                      // mapped IPv4 is IPv4
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"}, // a /64 is one client
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	}
	for _, c := range cases {
		if got := ratelimit.AddressKey(netip.MustParseAddr(c.in)); got != c.want {
			t.Errorf("AddressKey(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	if got := ratelimit.AddressKey(netip.Addr{}); got != "invalid" {
		t.Errorf("AddressKey(invalid) = %q", got)
	}
}

// BenchmarkAllow measures decisions against the real database, 16 at a
// time per core as under load (ns/op is then the inverse of throughput):
// many clients (distinct keys), one key flooding past its limit (refused
// from the snapshot, no row lock), and one hot key allowed every time (every
// request from one address, its row locked in turn).
func BenchmarkAllow(b *testing.B) {
	db := testkit.NewDB(b)
	st := store.New(db.Pool)
	b.Run("distinct_keys", func(b *testing.B) {
		b.SetParallelism(32) // 64 clients on 2 cores, as the ingress bench
		l := ratelimit.New(st, "address", 30, 15*time.Minute, nil)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(context.Background(), fmt.Sprint(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("one_key_refused", func(b *testing.B) {
		b.SetParallelism(32)
		l := ratelimit.New(st, "address", 1, time.Hour, nil)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(context.Background(), "flood"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("one_key", func(b *testing.B) {
		b.SetParallelism(32)
		l := ratelimit.New(st, "address", 1_000_000_000, time.Second, nil)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(context.Background(), "loopback"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// Sweep runs the store's delete every period until its context ends.
func TestSweepRunsEveryPeriod(t *testing.T) {
	db := testkit.NewDB(t)
	st := store.New(db.Pool)
	c := newClock()
	l := ratelimit.New(st, "address", 30, 15*time.Minute, c.now)
	for i := range 10 {
		allow(t, l, fmt.Sprint(i))
	}
	c.advance(time.Minute) // every key has recovered
	// The pool's connection exists before the bubble, which must not own
	// the pool's goroutines.
	if err := db.Pool.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			periodic.Run(ctx, 30*time.Second, zerolog.Nop(), "rate-limit sweep", func(ctx context.Context) (int64, error) {
				return st.DeleteRecoveredRateLimits(ctx, c.now())
			})
		}()
		time.Sleep(29 * time.Second)
		if n := count(t, db); n != 10 {
			t.Fatalf("%d keys before the first period, want 10", n)
		}
		time.Sleep(2 * time.Second)
		if n := count(t, db); n != 0 {
			t.Fatalf("%d keys after the first period, want 0", n)
		}
		cancel()
		<-done
	})
}

func count(t *testing.T, db *testkit.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM rate_limits").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// gate is a Store whose statements wait until released, counting them and
// the events they carry: it shows what the limiter coalesces.
type gate struct {
	ratelimit.Store
	release    chan struct{}
	statements atomic.Int64
	events     atomic.Int64
}

func (g *gate) TakeRateLimits(ctx context.Context, now func() time.Time, takes []store.RateTake) ([]store.RateTaken, error) {
	g.statements.Add(1)
	for _, t := range takes {
		g.events.Add(int64(t.Count))
	}
	<-g.release
	return g.Store.TakeRateLimits(ctx, now, takes)
}

// Events that arrive while a statement is in flight go together in the next
// one, each key's as a count, and every caller gets its own answer.
func TestEventsInFlightAreCoalesced(t *testing.T) {
	db := testkit.NewDB(t)
	g := &gate{Store: store.New(db.Pool), release: make(chan struct{})}
	l := ratelimit.New(g, "address", 3, time.Hour, newClock().now)
	var wg sync.WaitGroup
	var allowed, refused atomic.Int32
	call := func(key string) {
		d, err := l.Allow(context.Background(), key)
		switch {
		case err != nil:
			t.Error(err)
		case d.Allowed:
			allowed.Add(1)
		case d.RetryAfter <= 0:
			t.Error("refused without a Retry-After")
		default:
			refused.Add(1)
		}
	}
	wg.Go(func() { call("first") }) // its statement holds the others back
	for g.statements.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := range 40 {
		wg.Go(func() { call(fmt.Sprint("key", i%4)) }) // 10 events on each of 4 keys
	}
	time.Sleep(200 * time.Millisecond) // let them queue
	close(g.release)
	wg.Wait()
	if s := g.statements.Load(); s != 2 {
		t.Fatalf("%d statements for 41 events, want 2 (one in flight, one for all that queued)", s)
	}
	if allowed.Load() != 1+4*3 || refused.Load() != 4*7 {
		t.Fatalf("allowed %d, refused %d; want 13 and 28", allowed.Load(), refused.Load())
	}
}

// A caller that gives up while queued leaves the queue; one chosen to send
// the next statement sends it first. Either way the others are answered.
func TestCallersGivingUpDoNotStallTheQueue(t *testing.T) {
	db := testkit.NewDB(t)
	g := &gate{Store: store.New(db.Pool), release: make(chan struct{})}
	l := ratelimit.New(g, "address", 100, time.Hour, newClock().now)
	var wg sync.WaitGroup
	wg.Go(func() { allow(t, l, "first") })
	for g.statements.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Two queued callers give up (they would have been first in the next
	// statement); the rest wait.
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		wg.Go(func() {
			defer cancel()
			if _, err := l.Allow(ctx, "impatient"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("gave up with %v", err)
			}
		})
		time.Sleep(10 * time.Millisecond)
	}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		var inner sync.WaitGroup
		for range 5 {
			inner.Go(func() { allow(t, l, "patient") })
		}
		inner.Wait()
	}()
	time.Sleep(150 * time.Millisecond) // the impatient ones have left
	close(g.release)
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("the queue stalled after callers gave up")
	}
	wg.Wait()
}
