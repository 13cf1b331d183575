// Package periodic runs the service's housekeeping on a ticker: sweeping
// rate-limit keys that have recovered, expired Idempotency-Key records and
// the failure counts of unknown login names. Every such task only deletes
// rows that already count as absent, so a failed run is logged and the next
// period simply tries again: a missed run changes no answer.
package periodic

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// Task does one run and reports how many rows it removed.
type Task func(ctx context.Context) (int64, error)

// Run runs task every period until ctx ends; the first run is one period
// after the start.
func Run(ctx context.Context, every time.Duration, log zerolog.Logger, name string, task Task) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := task(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.Warn().Err(err).Str("task", name).Msg("housekeeping failed; the next period tries again")
		case n > 0:
			log.Debug().Int64("deleted", n).Str("task", name).Msg("housekeeping")
		}
	}
}
