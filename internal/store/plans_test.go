package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

// planRecorder collects the plans auto_explain sends as notices.
type planRecorder struct {
	mu    sync.Mutex
	plans []json.RawMessage
}

func (r *planRecorder) onNotice(_ *pgconn.PgConn, n *pgconn.Notice) {
	_, plan, ok := strings.Cut(n.Message, "plan:")
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plans = append(r.plans, json.RawMessage(strings.TrimSpace(plan)))
}

func (r *planRecorder) take() []json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.plans
	r.plans = nil
	return out
}

// bigTables grow with every user, token and email: reading one whole is a
// cost that rises with the service's age.
var bigTables = map[string]bool{"users": true, "tokens": true, "mail_deliveries": true, "audit_events": true, "sessions": true,
	"unknown_login_failures": true, "rate_limits": true}

// fullReads lists the plan nodes that read a big table whole: a sequential
// scan, or an index scan without an index condition.
func fullReads(node map[string]any) []string {
	var out []string
	if rel, _ := node["Relation Name"].(string); bigTables[rel] {
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
			out = append(out, fullReads(m)...)
		}
	}
	return out
}

// TestHotStatementsFindRowsByIndex checks the plans of the statements the
// reset pipeline and login run for every request. PostgreSQL plans them
// generically (pgx prepares them, and after a few runs PostgreSQL may keep
// one plan for all arguments) and from statistics that lag behind tables
// growing by thousands of rows a minute; a statement whose plan then reads a
// whole table slows down with every token ever issued. This once took the
// pipeline from 1,000 to 250–400 emails/s sustained as the tokens table grew.
func TestHotStatementsFindRowsByIndex(t *testing.T) {
	db := testkit.NewDB(t)
	ctx := context.Background()
	const rows = 3000
	_, err := db.Pool.Exec(ctx, `
		ALTER TABLE users SET (autovacuum_enabled = off);
		ALTER TABLE tokens SET (autovacuum_enabled = off);
		ALTER TABLE mail_deliveries SET (autovacuum_enabled = off);
		ALTER TABLE rate_limits SET (autovacuum_enabled = off);
		INSERT INTO rate_limits (key, tat) SELECT sha256(i::text::bytea), now() FROM generate_series(1, `+fmt.Sprint(rows)+`) i;
		INSERT INTO domains (name) VALUES ('plans.example');
		INSERT INTO users (domain_id, extension, login_name, email, first_name, last_name, locale)
		SELECT d.id, i::text, 'u' || i || '@plans.example', 'u' || i || '@mail.example', 'F', 'L', 'en'
		FROM domains d, generate_series(1, `+fmt.Sprint(rows)+`) i;
		INSERT INTO mail_deliveries (idempotency_key, user_id, template, locale, recipient, status, attempts,
		                             token_purpose, token_ttl_seconds)
		SELECT 'plans:' || u.id, u.id, 'password_reset', 'en', u.email, 'sending', 1, 'reset', 1800 FROM users u;
		INSERT INTO tokens (user_id, purpose, token_hash, expires_at, delivery_id)
		SELECT md.user_id, 'reset', sha256(md.id::text::bytea), now() + interval '30 minutes', md.id
		FROM mail_deliveries md;`)
	if err != nil {
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

	var users []store.User
	for i := 1; i <= 4; i++ {
		u, err := s.UserByLoginName(ctx, fmt.Sprintf("u%d@plans.example", i))
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	ids := make([]uuid.UUID, len(users))
	var keys []string
	for i, u := range users {
		ids[i] = u.ID
	}
	var deliveryIDs []uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY idempotency_key), array_agg(idempotency_key ORDER BY idempotency_key)
		FROM mail_deliveries WHERE user_id = ANY($1)`, ids).Scan(&deliveryIDs, &keys); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lockout := store.Lockout{Threshold: 5, Duration: 15 * time.Minute}
	inTx := func(f func(tx pgx.Tx) error) error {
		return pgx.BeginFunc(ctx, pool, f)
	}

	statements := []struct {
		name string
		run  func() error
	}{
		{"UserByLoginName", func() error { _, err := s.UserByLoginName(ctx, "u7@plans.example"); return err }},
		{"UsersByIdentifier", func() error { _, err := s.UsersByIdentifier(ctx, "u7@mail.example"); return err }},
		{"AdmitLoginAttempt", func() error { _, err := s.AdmitLoginAttempt(ctx, "u3@plans.example", lockout, now); return err }},
		{"AdmitUnknownLoginAttempt", func() error {
			_, err := s.AdmitUnknownLoginAttempt(ctx, "nobody@plans.example", lockout, now)
			return err
		}},
		{"CompleteLogin", func() error {
			_, err := s.CompleteLogin(ctx, nil, users[0].ID, users[0].CredentialVersion,
				store.NewSession{TokenHash: []byte("plans-session"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
				store.AuditEvent{Kind: "login.succeeded", ActorKind: "self"})
			return err
		}},
		{"LockUser", func() error {
			return inTx(func(tx pgx.Tx) error { _, err := s.LockUser(ctx, tx, users[1].ID); return err })
		}},
		{"LockUsersWithDomain", func() error {
			return inTx(func(tx pgx.Tx) error { _, err := s.LockUsersWithDomain(ctx, tx, ids); return err })
		}},
		{"DeliveriesByKeys", func() error {
			return inTx(func(tx pgx.Tx) error { _, err := s.DeliveriesByKeys(ctx, tx, keys); return err })
		}},
		{"RecentDeliveryCounts", func() error {
			return inTx(func(tx pgx.Tx) error {
				_, err := s.RecentDeliveryCounts(ctx, tx, ids, "password_reset", now.Add(-time.Hour))
				return err
			})
		}},
		{"ClaimDeliveries", func() error {
			return inTx(func(tx pgx.Tx) error { _, err := s.ClaimDeliveries(ctx, tx, deliveryIDs, now, now); return err })
		}},
		{"IssueTokens", func() error {
			grants := make([]store.TokenGrant, len(users))
			for i, u := range users {
				grants[i] = store.TokenGrant{UserID: u.ID, Purpose: "reset", Hash: []byte(u.ID.String()),
					ExpiresAt: now.Add(time.Hour), DeliveryID: deliveryIDs[i]}
			}
			return inTx(func(tx pgx.Tx) error { return s.IssueTokens(ctx, tx, grants, now) })
		}},
		{"RenewClaims", func() error {
			claims := make([]store.Claim, len(deliveryIDs))
			for i, id := range deliveryIDs {
				claims[i] = store.Claim{ID: id, Attempt: 2}
			}
			_, err := s.RenewClaims(ctx, claims, now)
			return err
		}},
		{"FinishDeliveries", func() error {
			outcomes := make([]store.Outcome, len(deliveryIDs))
			for i, id := range deliveryIDs {
				outcomes[i] = store.Outcome{ID: id, Attempt: 2, Status: "sent", AuditKind: "mail.sent",
					Event: &store.OutboxEvent{EventID: "mail.delivered:" + id.String(), Subject: "latchkey.mail.delivered", Payload: []byte("{}")}}
			}
			_, err := s.FinishDeliveries(ctx, outcomes, now)
			return err
		}},
		{"RevokeTokensOfDeliveries", func() error {
			return inTx(func(tx pgx.Tx) error { return s.RevokeTokensOfDeliveries(ctx, tx, deliveryIDs, now) })
		}},
		{"DeleteOutbox", func() error {
			return s.DeleteOutbox(ctx, nil, []string{"mail.delivered:" + deliveryIDs[0].String()})
		}},
		// Every login and recovery request, once or twice.
		{"TakeRateLimits", func() error {
			_, err := s.TakeRateLimits(ctx, time.Now, []store.RateTake{
				{Key: []byte("plans-key-that-is-thirty-two-b.."), Count: 2, Interval: time.Minute, Burst: time.Hour},
				{Key: []byte("another-key-of-thirty-two-bytes."), Count: 1, Interval: time.Minute, Burst: time.Hour},
			})
			return err
		}},
		{"TakeRateLimits (existing keys)", func() error {
			_, err := s.TakeRateLimits(ctx, time.Now, []store.RateTake{
				{Key: []byte("plans-key-that-is-thirty-two-b.."), Count: 1, Interval: time.Minute, Burst: time.Hour},
				{Key: []byte("another-key-of-thirty-two-bytes."), Count: 3, Interval: time.Minute, Burst: time.Hour},
			})
			return err
		}},
		// The sweep: each of its statements must read one key range, not
		// the table.
		{"DeleteRecoveredRateLimits", func() error { _, err := s.DeleteRecoveredRateLimits(ctx, now); return err }},
	}
	for _, st := range statements {
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
			if bad := fullReads(explained.Plan); len(bad) > 0 {
				t.Errorf("%s reads a whole table (%s) in:\n%s\nplan: %s", st.name, strings.Join(bad, "; "), explained.QueryText, raw)
			}
		}
	}
}
