package coalesce

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder flushes by doubling, keeps each batch, and can be held.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{} // nil: never held
}

func (r *recorder) flush(_ context.Context, items []int) ([]int, error) {
	r.mu.Lock()
	r.batches = append(r.batches, append([]int(nil), items...))
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	out := make([]int, len(items))
	for i, v := range items {
		out[i] = 2 * v
	}
	return out, nil
}

func TestCallsInFlightGoTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{hold: make(chan struct{})}
		b := New(100, time.Minute, r.flush)
		results := make([]int, 11)
		var wg sync.WaitGroup
		wg.Go(func() { results[0], _ = b.Do(context.Background(), 0) })
		synctest.Wait() // the first flush is in flight, held
		for i := 1; i <= 10; i++ {
			wg.Go(func() { results[i], _ = b.Do(context.Background(), i) })
		}
		synctest.Wait()
		close(r.hold)
		wg.Wait()
		if len(r.batches) != 2 || len(r.batches[0]) != 1 || len(r.batches[1]) != 10 {
			t.Fatalf("batches %v, want [0] then the ten that waited", r.batches)
		}
		for i, v := range results {
			if v != 2*i {
				t.Fatalf("result %d = %d", i, v)
			}
		}
	})
}

func TestBatchesAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{hold: make(chan struct{})}
		b := New(4, time.Minute, r.flush)
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = b.Do(context.Background(), 0) })
		synctest.Wait()
		for i := 1; i <= 10; i++ {
			wg.Go(func() { _, _ = b.Do(context.Background(), i) })
		}
		synctest.Wait()
		close(r.hold)
		wg.Wait()
		for _, batch := range r.batches {
			if len(batch) > 4 {
				t.Fatalf("batch of %d, max 4: %v", len(batch), r.batches)
			}
		}
	})
}

func TestFlushErrorReachesEveryCallerOfItsBatch(t *testing.T) {
	fail := errors.New("database down")
	b := New(10, time.Minute, func(context.Context, []int) ([]int, error) { return nil, fail })
	if _, err := b.Do(context.Background(), 1); !errors.Is(err, fail) {
		t.Fatalf("err = %v", err)
	}
	short := New(10, time.Minute, func(context.Context, []int) ([]int, error) { return nil, nil })
	if _, err := short.Do(context.Background(), 1); err == nil {
		t.Fatal("a flush returning too few results was taken as success")
	}
}

// A caller that gives up while queued leaves the queue; the next flush is
// handed to one still waiting, and the others are answered. (A caller
// chosen at the very moment it gives up runs the flush first; that
// interleaving needs the choice to land between its enqueue and its wait,
// which no test can arrange, so the scenario runs a few times to let the
// scheduler vary.)
func TestCallersGivingUpDoNotStallTheOthers(t *testing.T) {
	for range 20 {
		synctest.Test(t, func(t *testing.T) {
			r := &recorder{hold: make(chan struct{})}
			b := New(100, time.Minute, r.flush)
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = b.Do(context.Background(), 0) })
			synctest.Wait()
			ctx, cancel := context.WithCancel(context.Background())
			wg.Go(func() {
				if _, err := b.Do(ctx, 1); err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("gave up with %v", err)
				}
			})
			synctest.Wait()
			got := make(chan int, 1)
			wg.Go(func() { v, _ := b.Do(context.Background(), 2); got <- v })
			synctest.Wait()
			r.mu.Lock()
			first := r.hold
			r.hold = nil // later flushes are not held
			r.mu.Unlock()
			cancel()
			close(first)
			wg.Wait()
			if v := <-got; v != 4 {
				t.Fatalf("the patient caller got %d", v)
			}
		})
	}
}
