package periodic_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/periodic"
)

// A failed run must not end the loop: the next period tries again, and the
// loop ends only with its context.
func TestRunKeepsGoingAfterAFailureAndStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Run(ctx, 5*time.Millisecond, zerolog.Nop(), "test", func(context.Context) (int64, error) {
			if runs.Add(1) == 1 {
				return 0, errors.New("database unavailable")
			}
			return 1, nil
		})
	}()
	deadline := time.After(10 * time.Second)
	for runs.Load() < 3 {
		select {
		case <-deadline:
			t.Fatalf("runs = %d after 10 s, want at least 3", runs.Load())
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
