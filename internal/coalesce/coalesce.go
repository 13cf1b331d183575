// Package coalesce turns concurrent calls that each need a round trip into
// few round trips: the calls that arrive while one flush is in flight wait
// and go together in the next flush. Under load one round trip serves many
// callers; a caller alone pays one round trip, with no added delay. At most
// one flush of a Batcher runs at a time, and it runs on a caller's goroutine
// (the first of its batch), so a Batcher has no goroutine of its own and
// nothing to start or stop.
package coalesce

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Flush does the work of a batch of items and returns one result per item,
// in order, or an error for all of them. Its context is detached from the
// callers' (one caller giving up must not fail the others) and bounded by
// the Batcher's timeout.
type Flush[T, R any] func(ctx context.Context, items []T) ([]R, error)

// Batcher coalesces calls of one kind. It is safe for concurrent use.
type Batcher[T, R any] struct {
	flush    Flush[T, R]
	max      int
	timeout  time.Duration
	mu       sync.Mutex
	queue    []*waiter[T, R] // items not yet in a flush
	flushing bool            // a flush is in flight, or a waiter was chosen to send the next
}

type waiter[T, R any] struct {
	item   T
	result chan outcome[R] // buffered: a flush never blocks on it
	lead   chan struct{}   // closed when this waiter is to run the next flush
	chosen bool            // under Batcher.mu: lead was closed
	led    bool            // the waiter ran its flush (its own goroutine only)
}

type outcome[R any] struct {
	value R
	err   error
}

// New returns a Batcher that flushes at most max items at once, each flush
// under a context with the given timeout.
func New[T, R any](max int, timeout time.Duration, flush Flush[T, R]) *Batcher[T, R] {
	return &Batcher[T, R]{flush: flush, max: max, timeout: timeout}
}

// Do adds item to the next flush and returns its result. It returns ctx's
// error when ctx ends first; the item may then still be flushed.
func (b *Batcher[T, R]) Do(ctx context.Context, item T) (R, error) {
	w := &waiter[T, R]{item: item, result: make(chan outcome[R], 1), lead: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, w)
	if !b.flushing {
		b.flushing, w.chosen = true, true
		close(w.lead)
	}
	b.mu.Unlock()
	lead := w.lead
	for {
		select {
		case o := <-w.result:
			return o.value, o.err
		case <-lead:
			b.run(ctx)
			w.led, lead = true, nil // led once; now wait for the result
		case <-ctx.Done():
			if b.leave(w) {
				// Chosen to run the next flush: run it for the others
				// before leaving.
				b.run(ctx)
			}
			var zero R
			return zero, ctx.Err()
		}
	}
}

// leave withdraws a waiter whose caller gave up. It reports true when the
// waiter was chosen to run the next flush and has not yet: it must run it,
// or the queue would wait forever. A waiter already in a flush is flushed
// anyway.
func (b *Batcher[T, R]) leave(w *waiter[T, R]) (mustRun bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.chosen {
		return !w.led
	}
	for i, q := range b.queue {
		if q == w {
			b.queue = append(b.queue[:i:i], b.queue[i+1:]...)
			break
		}
	}
	return false
}

// run flushes the queued items (up to max), delivers the results and hands
// the next flush to the first waiter still queued, so that no caller runs
// flushes for others for longer than its own.
func (b *Batcher[T, R]) run(ctx context.Context) {
	b.mu.Lock()
	n := min(len(b.queue), b.max)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()

	if len(batch) > 0 {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
		items := make([]T, len(batch))
		for i, w := range batch {
			items[i] = w.item
		}
		results, err := b.flush(fctx, items)
		cancel()
		if err == nil && len(results) != len(batch) {
			err = fmt.Errorf("coalesce: flush returned %d results for %d items", len(results), len(batch))
		}
		for i, w := range batch {
			if err != nil {
				w.result <- outcome[R]{err: err}
			} else {
				w.result <- outcome[R]{value: results[i]}
			}
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.flushing = false
		return
	}
	next := b.queue[0]
	next.chosen = true
	close(next.lead)
}
