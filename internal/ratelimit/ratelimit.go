// Package ratelimit allows N events per window per key, in memory, with the
// generic cell rate algorithm: one timestamp per key, no background work.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter limits events per key. Each process keeps its own state; the
// workers enforce the per-account limit again in PostgreSQL, so several
// ingress processes cannot multiply the emails a burst produces.
type Limiter struct {
	mu       sync.Mutex
	interval time.Duration // between events at the sustained rate
	burst    time.Duration // how far ahead of now a key's clock may run
	now      func() time.Time
	maxKeys  int
	tat      map[string]time.Time // theoretical arrival time per key
}

// New allows count events per window, in a burst or spread out. maxKeys
// bounds memory: when full, keys whose allowance has fully recovered are
// dropped, and if none has, the limiter refuses new keys rather than grow.
func New(count int, window time.Duration, now func() time.Time, maxKeys int) *Limiter {
	if now == nil {
		now = time.Now
	}
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	interval := window / time.Duration(count)
	return &Limiter{interval: interval, burst: window - interval, now: now, maxKeys: maxKeys, tat: map[string]time.Time{}}
}

// Allow takes one event for key. When refused, it says how long until the
// next one would be allowed.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	tat, ok := l.tat[key]
	if !ok {
		if len(l.tat) >= l.maxKeys {
			l.sweep(now)
			if len(l.tat) >= l.maxKeys {
				return false, l.interval
			}
		}
		tat = now
	}
	if tat.Before(now) {
		tat = now
	}
	if wait := tat.Sub(now) - l.burst; wait > 0 {
		return false, wait
	}
	l.tat[key] = tat.Add(l.interval)
	return true, 0
}

func (l *Limiter) sweep(now time.Time) {
	for k, tat := range l.tat {
		if !tat.After(now) {
			delete(l.tat, k)
		}
	}
}
