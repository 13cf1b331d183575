package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

func claimFor(key, fingerprint string) store.IdempotencyClaim {
	k, f := sha256.Sum256([]byte(key)), sha256.Sum256([]byte(fingerprint))
	return store.IdempotencyClaim{Key: k[:], Fingerprint: f[:], Holder: uuid.New(), Lease: time.Minute, TTL: 24 * time.Hour}
}

// What a claim finds, through a record's life: taken, held, answered,
// reused with another request, released (same effect id for the retry),
// taken over after its holder's lease, and new again after the TTL.
func TestClaimIdempotencyKey(t *testing.T) {
	db := testkit.NewDB(t)
	s := store.New(db.Pool)
	ctx := context.Background()
	now := time.Now()
	claim := func(c store.IdempotencyClaim, at time.Time) store.IdempotencyState {
		t.Helper()
		st, err := s.ClaimIdempotencyKey(ctx, c, at)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	first := claimFor("k1", "request A")
	st := claim(first, now)
	if !st.Acquired || !st.Fresh || st.EffectID == uuid.Nil {
		t.Fatalf("new key: %+v", st)
	}
	effect := st.EffectID
	if st := claim(claimFor("k1", "request A"), now); !st.InProgress {
		t.Fatalf("held key: %+v", st)
	}
	if st := claim(claimFor("k1", "request B"), now); !st.Reused {
		t.Fatalf("another request under a held key: %+v", st)
	}

	// Released (a 5xx): the retry runs, with the same effect id.
	if err := s.ReleaseIdempotencyKey(ctx, first.Key, first.Holder); err != nil {
		t.Fatal(err)
	}
	retry := claimFor("k1", "request A")
	if st := claim(retry, now); !st.Acquired || st.Fresh || st.EffectID != effect {
		t.Fatalf("after release: %+v, want the effect id %s", st, effect)
	}
	// The first holder can no longer answer: the key is the retry's.
	if held, err := s.AnswerIdempotencyKey(ctx, first.Key, first.Holder, 202, []byte("first")); err != nil || held {
		t.Fatalf("answer by a former holder: %v %v", held, err)
	}
	if held, err := s.AnswerIdempotencyKey(ctx, retry.Key, retry.Holder, 202, []byte("sealed")); err != nil || !held {
		t.Fatalf("answer: %v %v", held, err)
	}
	st = claim(claimFor("k1", "request A"), now)
	if !st.Answered || st.Status != 202 || string(st.Answer) != "sealed" {
		t.Fatalf("answered key: %+v", st)
	}
	if st := claim(claimFor("k1", "request B"), now); !st.Reused {
		t.Fatalf("another request under an answered key: %+v", st)
	}

	// A holder that never comes back is taken over after its lease.
	claim(claimFor("k2", "request A"), now)
	if st := claim(claimFor("k2", "request A"), now.Add(59*time.Second)); !st.InProgress {
		t.Fatalf("within the lease: %+v", st)
	}
	if st := claim(claimFor("k2", "request A"), now.Add(61*time.Second)); !st.Acquired {
		t.Fatalf("after the lease: %+v", st)
	}

	// After the TTL the key is new: any request, a new effect id.
	later := now.Add(24*time.Hour + time.Second)
	st = claim(claimFor("k1", "request B"), later)
	if !st.Acquired || !st.Fresh || st.EffectID == effect {
		t.Fatalf("after the TTL: %+v", st)
	}

	// A refused request's record is forgotten, by its holder only.
	refused := claimFor("k3", "request A")
	claim(refused, now)
	if err := s.ForgetIdempotencyKey(ctx, refused.Key, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if st := claim(claimFor("k3", "request B"), now); !st.Reused {
		t.Fatalf("forgotten by another holder: %+v", st)
	}
	if err := s.ForgetIdempotencyKey(ctx, refused.Key, refused.Holder); err != nil {
		t.Fatal(err)
	}
	if st := claim(claimFor("k3", "request B"), now); !st.Acquired || !st.Fresh {
		t.Fatalf("after forgetting: %+v", st)
	}
	n, err := s.DeleteExpiredIdempotencyKeys(ctx, later.Add(-24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("swept %d (%v), want k2 and k3", n, err)
	}
}

// Every request with an Idempotency-Key runs the claim, and then the answer
// or the release; they must find the row by its key however many there are,
// and the sweep must find the expired ones by their age.
func TestIdempotencyStatementsFindRowsByIndex(t *testing.T) {
	db := testkit.NewDB(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `ALTER TABLE idempotency_keys SET (autovacuum_enabled = off);
		INSERT INTO idempotency_keys (key, effect_id, fingerprint, created_at, status, answer)
		SELECT sha256(i::text::bytea), gen_random_uuid(), sha256(i::text::bytea), now(), 202, 'x'
		FROM generate_series(1, 3000) i`); err != nil {
		t.Fatal(err)
	}
	plans := &planRecorder{}
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.OnNotice = plans.onNotice
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `LOAD 'auto_explain';
			SET auto_explain.log_min_duration = 0;
			SET auto_explain.log_level = notice;
			SET auto_explain.log_format = json;
			SET plan_cache_mode = force_generic_plan`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := store.New(pool)
	now := time.Now()
	c := claimFor("plans", "request")
	for _, st := range []struct {
		name string
		run  func() error
	}{
		{"ClaimIdempotencyKey", func() error { _, err := s.ClaimIdempotencyKey(ctx, c, now); return err }},
		{"ClaimIdempotencyKey (held)", func() error { _, err := s.ClaimIdempotencyKey(ctx, claimFor("plans", "request"), now); return err }},
		{"ReleaseIdempotencyKey", func() error { return s.ReleaseIdempotencyKey(ctx, c.Key, c.Holder) }},
		{"ForgetIdempotencyKey", func() error { return s.ForgetIdempotencyKey(ctx, c.Key, uuid.New()) }},
		{"AnswerIdempotencyKey", func() error { _, err := s.AnswerIdempotencyKey(ctx, c.Key, c.Holder, 202, []byte("x")); return err }},
		{"DeleteExpiredIdempotencyKeys", func() error { _, err := s.DeleteExpiredIdempotencyKeys(ctx, now.Add(-time.Hour)); return err }},
	} {
		plans.take()
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := plans.take()
		if len(got) == 0 {
			t.Fatalf("%s: auto_explain reported no plan", st.name)
		}
		for _, raw := range got {
			var explained struct {
				QueryText string         `json:"Query Text"`
				Plan      map[string]any `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &explained); err != nil {
				t.Fatalf("%s: plan %s: %v", st.name, raw, err)
			}
			if bad := wholeReads(explained.Plan, "idempotency_keys"); len(bad) > 0 {
				t.Errorf("%s reads the whole table (%s) in:\n%s\nplan: %s", st.name, strings.Join(bad, "; "), explained.QueryText, raw)
			}
		}
	}
}

// wholeReads is fullReads for one table.
func wholeReads(node map[string]any, table string) []string {
	var out []string
	if rel, _ := node["Relation Name"].(string); rel == table {
		switch typ, _ := node["Node Type"].(string); {
		case typ == "Seq Scan":
			out = append(out, "Seq Scan on "+rel)
		case strings.Contains(typ, "Index") && node["Index Cond"] == nil:
			out = append(out, fmt.Sprintf("%s on %s without an index condition", typ, rel))
		}
	}
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		if m, ok := c.(map[string]any); ok {
			out = append(out, wholeReads(m, table)...)
		}
	}
	return out
}
