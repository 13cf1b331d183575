package events

import (
	"context"
	"strconv"
	"sync"

	"github.com/google/uuid"
)

// idSeed is what WithIDSeed puts in a context: the seed, and how many ids
// of each event type have been derived from it.
type idSeed struct {
	seed uuid.UUID
	mu   sync.Mutex
	n    map[string]int
}

type idSeedKey struct{}

// WithIDSeed returns a context under which DerivedID gives the events a
// request creates ids derived from seed instead of random ones. The HTTP
// ingress sets it from a request's Idempotency-Key record, so that a retry
// of the request (after a lost PubAck, say) publishes the same event ids:
// JetStream drops the copy within its duplicate window, and the workers,
// which key their effects on event ids, recognise it after that.
func WithIDSeed(ctx context.Context, seed uuid.UUID) context.Context {
	return context.WithValue(ctx, idSeedKey{}, &idSeed{seed: seed, n: map[string]int{}})
}

// DerivedID returns the id of the next event of eventType created under
// ctx, or false when ctx has no seed. The n-th event of a type under one
// seed always gets the same id: a UUID (version 5) of the seed and
// "type/n". Only events published directly need it; one queued in an
// outbox within the request's transaction is stored, id and all, once.
func DerivedID(ctx context.Context, eventType string) (string, bool) {
	s, ok := ctx.Value(idSeedKey{}).(*idSeed)
	if !ok {
		return "", false
	}
	s.mu.Lock()
	n := s.n[eventType]
	s.n[eventType]++
	s.mu.Unlock()
	return uuid.NewSHA1(s.seed, []byte(eventType+"/"+strconv.Itoa(n))).String(), true
}
