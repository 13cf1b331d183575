package ratelimit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/ratelimit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBurstThenRefillAtTheRate(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := ratelimit.New(5, 15*time.Minute, c.now, 0)
	for i := range 5 {
		if ok, _ := l.Allow("acct"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("acct")
	if ok || wait <= 0 || wait > 3*time.Minute {
		t.Fatalf("6th request: ok=%v wait=%v; want refused with a wait of at most 3m", ok, wait)
	}
	if ok, _ := l.Allow("other"); !ok {
		t.Fatal("another key is limited by the first")
	}
	c.t = c.t.Add(wait)
	if ok, _ := l.Allow("acct"); !ok {
		t.Fatal("refused after waiting the advertised time")
	}
	if ok, _ := l.Allow("acct"); ok {
		t.Fatal("a second request right after the refill was allowed")
	}
	c.t = c.t.Add(15 * time.Minute)
	for i := range 5 {
		if ok, _ := l.Allow("acct"); !ok {
			t.Fatalf("after a full window, request %d refused", i+1)
		}
	}
}

func TestMemoryIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := ratelimit.New(1, time.Minute, c.now, 10)
	for i := range 10 {
		if ok, _ := l.Allow(fmt.Sprint(i)); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	if ok, _ := l.Allow("eleventh"); ok {
		t.Fatal("a new key was admitted past maxKeys while every key is still limited")
	}
	c.t = c.t.Add(time.Minute)
	if ok, _ := l.Allow("eleventh"); !ok {
		t.Fatal("recovered keys were not swept to make room")
	}
}
