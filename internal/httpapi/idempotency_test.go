package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/delivery"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/httpapi"
	"github.com/latchkey/latchkey/internal/outbox"
	"github.com/latchkey/latchkey/internal/ratelimit"
	"github.com/latchkey/latchkey/internal/recovery"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/testkit"
)

// faultyJS is the stack's JetStream with faults injected into publishing:
// lose makes the next publishes store their message and then fail as if
// the PubAck had been lost; hold makes the next publish wait until the
// test closes the channel it gets from held.
type faultyJS struct {
	jetstream.JetStream
	lose atomic.Int32

	mu   sync.Mutex
	hold chan struct{}
	held chan struct{} // closed when a publish is being held
}

func (j *faultyJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.mu.Lock()
	hold, held := j.hold, j.held
	j.hold, j.held = nil, nil
	j.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && j.lose.Add(-1) >= 0 {
		return nil, fmt.Errorf("PubAck lost: %w", nats.ErrTimeout)
	}
	return ack, err
}

// holdNext makes the next publish wait until release is called; held is
// closed once it waits.
func (j *faultyJS) holdNext() (<-chan struct{}, func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	hold, held := make(chan struct{}), make(chan struct{})
	j.hold, j.held = hold, held
	return held, sync.OnceFunc(func() { close(hold) })
}

// faultyIngress is a second ingress process of the stack, built by the same
// constructors as the app's, whose publisher goes through a faultyJS. The
// stack's workers consume what it publishes.
func faultyIngress(t *testing.T, s *apptest.Stack) (string, *faultyJS) {
	t.Helper()
	js := &faultyJS{JetStream: s.App.JS}
	pub := events.NewPublisher(js)
	cfg, st, now := s.App.Config, s.App.Store, s.Clock.Now
	log, _ := testkit.NewLogger(t)
	hasher, err := credential.NewHasher(credential.HasherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := credential.NewPolicy(credential.PolicyConfig{
		PasswordMinLength: cfg.PasswordMinLength, PasswordMaxLength: cfg.PasswordMaxLength,
		PINMinLength: cfg.PINMinLength, PINMaxLength: cfg.PINMaxLength,
	})
	if err != nil {
		t.Fatal(err)
	}
	sm := sessions.New(st, cfg.SessionTTL, now)
	rec := recovery.New(recovery.Config{
		Disclosure: cfg.Disclosure, ResetTTL: cfg.ResetTTL, RateLimitPerAccount: cfg.RateLimitPerAccount,
		UnlockOnReset: cfg.UnlockOnReset, LoginAfterReset: cfg.LoginAfterReset,
	}, st, pub, delivery.NewRequester(st, pub, now), outbox.New(st, pub, log), hasher, policy, sm, now)
	h := httpapi.New(httpapi.Deps{
		Store: st, Accounts: accounts.New(st, hasher, policy, now, accounts.Config{}), Recovery: rec, Sessions: sm, Now: now,
		Limiters: httpapi.Limiters{
			PerAddress: ratelimit.New(st, "address", cfg.RateLimitPerAddress.Count, cfg.RateLimitPerAddress.Window, now),
		},
		Auth: adminkeys.NewAuthenticator(st, cfg.AdminToken), Metrics: httpapi.NewMetrics(prometheus.NewRegistry()), Logger: log,
	}, httpapi.Config{MaxBodyBytes: cfg.MaxBodyBytes})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, js
}

// send posts body (as it is) to base+path with the given headers.
func send(t *testing.T, base, path, body string, header map[string]string) apptest.Response {
	t.Helper()
	r, err := trySend(base, path, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// trySend is send for other goroutines than the test's.
func trySend(base, path, body string, header map[string]string) (apptest.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", base+path, strings.NewReader(body))
	if err != nil {
		return apptest.Response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return apptest.Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return apptest.Response{}, err
	}
	return apptest.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

func withKey(key string) map[string]string { return map[string]string{"Idempotency-Key": key} }

func adminWithKey(key string) map[string]string {
	return map[string]string{"Idempotency-Key": key, "Authorization": "Bearer " + apptest.AdminToken}
}

// streamCount is how many messages of an event type the stream holds.
func streamCount(t *testing.T, s *apptest.Stack, eventType string) uint64 {
	t.Helper()
	subject := events.SubjectPrefix + eventType
	info, err := s.App.Stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// mailStack runs the ingress, the tokens worker and the mailer, with one
// user whose id it returns.
func mailStack(t *testing.T, env map[string]string) (*apptest.Stack, string) {
	t.Helper()
	s := apptest.Start(t, apptest.Options{Roles: []app.Role{app.RoleTokens, app.RoleMailer}, Env: env})
	createDomain(t, s, "acme.11111.service")
	return s, createUserWithEmail(t, s, "1001", "jason@example.com")
}

const forgotBody = `{"identifier":"jason@example.com"}`

// Issue 10, fault 9: the ingress stored the event but lost its PubAck and
// answered 503; the client's retry with the same Idempotency-Key publishes
// the same event again, which JetStream drops: one email, not two.
func TestLostPubAckRetryWithTheSameKeySendsOneEmail(t *testing.T) {
	s, userID := mailStack(t, nil)
	ingress, js := faultyIngress(t, s)
	key := testkit.Secret(t)

	js.lose.Store(1)
	if r := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key)); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("first request with its PubAck lost: %d %s", r.Status, r.Body)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 1 {
		t.Fatalf("%d reset.requested stored by the first request, want 1 (the fault injected is a lost PubAck)", n)
	}
	r := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key))
	if r.Status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", r.Status, r.Body)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 1 {
		t.Fatalf("%d reset.requested in the stream after the retry, want 1", n)
	}
	if d := settledDelivery(t, s, userID); d["status"] != "sent" {
		t.Fatalf("delivery = %v", d)
	}
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	// A third try is answered from the record, and publishes nothing.
	again := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key))
	if again.Status != http.StatusAccepted || !bytes.Equal(again.Body, r.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s %v", again.Status, again.Body, again.Header)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 1 {
		t.Fatalf("%d reset.requested after the replay, want 1", n)
	}
}

// A retry refused for now (429) after a try whose outcome is unknown keeps
// the key's effect id: the retry that finally runs is still the same event.
func TestRetryAfterALostPubAckAndARefusalStillSendsOneEmail(t *testing.T) {
	s, userID := mailStack(t, map[string]string{"RATE_LIMIT_PER_ADDRESS": "1/1h"})
	ingress, js := faultyIngress(t, s)
	key := testkit.Secret(t)
	js.lose.Store(1)
	if r := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key)); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("first request with its PubAck lost: %d %s", r.Status, r.Body)
	}
	expectProblem(t, send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key)), http.StatusTooManyRequests, "rate_limited")
	s.Clock.Advance(time.Hour)
	if r := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key)); r.Status != http.StatusAccepted {
		t.Fatalf("retry an hour later: %d %s", r.Status, r.Body)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 1 {
		t.Fatalf("%d reset.requested, want 1", n)
	}
	if d := settledDelivery(t, s, userID); d["status"] != "sent" || s.SMTP.Count() != 1 {
		t.Fatalf("delivery %v, %d emails; want one sent", d, s.SMTP.Count())
	}
}

// Without the key nothing changes: a retry is a new request (the README
// states that its email supersedes the first).
func TestRetryWithoutAKeyIsANewRequest(t *testing.T) {
	s, _ := mailStack(t, nil)
	ingress, _ := faultyIngress(t, s)
	for range 2 {
		if r := send(t, ingress, "/v1/password/forgot", forgotBody, nil); r.Status != http.StatusAccepted {
			t.Fatalf("forgot: %d %s", r.Status, r.Body)
		}
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 2 {
		t.Fatalf("%d reset.requested, want 2", n)
	}
}

// A replay is byte for byte the first answer, whatever it was, with the
// same headers, and changes nothing; the same key with another body is 422.
func TestReplayIsTheFirstAnswer(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	base := s.Server.URL
	user := `{"domain":"acme.11111.service","extension":"1001","email":"jason@example.com","first_name":"Jason"}`
	key := testkit.Secret(t)

	first := send(t, base, "/v1/admin/users", user, adminWithKey(key))
	if first.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", first.Status, first.Body)
	}
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the first answer says it is a replay")
	}
	replay := send(t, base, "/v1/admin/users", user, adminWithKey(key))
	if replay.Status != first.Status || !bytes.Equal(replay.Body, first.Body) {
		t.Fatalf("replay %d %s, want %d %s", replay.Status, replay.Body, first.Status, first.Body)
	}
	for _, h := range []string{"Content-Type", "Cache-Control", "Location"} {
		if replay.Header.Get(h) != first.Header.Get(h) || first.Header.Get(h) == "" {
			t.Errorf("%s: replay %q, first %q", h, replay.Header.Get(h), first.Header.Get(h))
		}
	}
	if replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("the replay is not marked Idempotent-Replayed")
	}
	var users int
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&users); err != nil || users != 1 {
		t.Fatalf("%d users (%v), want 1", users, err)
	}

	// Another body under the key: refused, and nothing is created.
	other := strings.Replace(user, "1001", "1002", 1)
	expectProblem(t, send(t, base, "/v1/admin/users", other, adminWithKey(key)), http.StatusUnprocessableEntity, "idempotency_key_reused")
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&users); err != nil || users != 1 {
		t.Fatalf("%d users (%v) after reusing the key, want 1", users, err)
	}
	// So is the same body on another path of the route.
	id := first.Map(t)["id"].(string)
	k2 := testkit.Secret(t)
	if r := send(t, base, "/v1/admin/users/"+id+"/disable", "", adminWithKey(k2)); r.Status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	expectProblem(t, send(t, base, "/v1/admin/users/00000000-0000-0000-0000-000000000000/disable", "", adminWithKey(k2)),
		http.StatusUnprocessableEntity, "idempotency_key_reused")

	// A refusal did nothing and is not kept: the corrected request may
	// use the same key.
	k3 := testkit.Secret(t)
	bad := `{"domain":"acme.11111.service","extension":"1 0","email":"x"}`
	expectProblem(t, send(t, base, "/v1/admin/users", bad, adminWithKey(k3)), http.StatusUnprocessableEntity, "validation_failed")
	fixed := strings.Replace(user, "1001", "1003", 1)
	if r := send(t, base, "/v1/admin/users", fixed, adminWithKey(k3)); r.Status != http.StatusCreated || r.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the corrected request under the same key: %d %s", r.Status, r.Body)
	}
}

// Refused requests leave no record, however many keys they bring: the
// table cannot be filled by anyone who can send a request.
func TestRefusalsLeaveNoRecord(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	for i := range 20 {
		body := fmt.Sprintf(`{"token":%q,"new_password":"a fine new passphrase","confirm_password":"a fine new passphrase"}`, testkit.Secret(t))
		expectProblem(t, send(t, s.Server.URL, "/v1/password/reset", body, withKey(fmt.Sprint("reset-", i))), http.StatusGone, "link_expired")
		expectProblem(t, send(t, s.Server.URL, "/v1/password/forgot", `{"identifier":"a b"}`, withKey(fmt.Sprint("forgot-", i))),
			http.StatusUnprocessableEntity, "validation_failed")
	}
	var n int
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d idempotency records (%v), want none", n, err)
	}
}

// Requests with one key while the first runs are refused with 409 and
// Retry-After, never run: one event, one email; once the first has
// answered, a retry gets its answer.
func TestConcurrentRequestsWithOneKeyHaveOneEffect(t *testing.T) {
	s, userID := mailStack(t, nil)
	ingress, js := faultyIngress(t, s)
	key := testkit.Secret(t)
	held, release := js.holdNext()
	defer release()

	type result struct {
		r   apptest.Response
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := trySend(ingress, "/v1/password/forgot", forgotBody, withKey(key))
		first <- result{r, err}
	}()
	<-held
	var wg sync.WaitGroup
	answers := make([]result, 8)
	for i := range answers {
		wg.Go(func() {
			r, err := trySend(ingress, "/v1/password/forgot", forgotBody, withKey(key))
			answers[i] = result{r, err}
		})
	}
	wg.Wait()
	for _, a := range answers {
		if a.err != nil {
			t.Fatal(a.err)
		}
		r := a.r
		p := expectProblem(t, r, http.StatusConflict, "idempotency_key_in_progress")
		if r.Header.Get("Retry-After") == "" {
			t.Fatalf("409 without Retry-After: %v", p)
		}
	}
	release()
	res := <-first
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	if r.Status != http.StatusAccepted {
		t.Fatalf("first: %d %s", r.Status, r.Body)
	}
	if again := send(t, ingress, "/v1/password/forgot", forgotBody, withKey(key)); again.Status != http.StatusAccepted || !bytes.Equal(again.Body, r.Body) {
		t.Fatalf("after the first answered: %d %s", again.Status, again.Body)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 1 {
		t.Fatalf("%d reset.requested, want 1", n)
	}
	if d := settledDelivery(t, s, userID); d["status"] != "sent" || s.SMTP.Count() != 1 {
		t.Fatalf("delivery %v, %d emails; want one sent", d, s.SMTP.Count())
	}
}

// An answer that carries a secret (the session a reset opens) is replayed
// whole to the retry, and stored only sealed: neither it nor the request
// is in the database in clear.
func TestResetAnswerIsReplayedButNotStoredInClear(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	id := createUserWithEmail(t, s, "1001", "jason@example.com")
	token := testkit.Secret(t) + testkit.Secret(t)
	if _, err := s.DB.Pool.Exec(context.Background(), `INSERT INTO tokens (user_id, purpose, token_hash, expires_at)
		VALUES ($1, 'reset', sha256(convert_to($2, 'UTF8')), now() + interval '30 minutes')`, id, token); err != nil {
		t.Fatal(err)
	}
	password := testkit.Secret(t)
	body := fmt.Sprintf(`{"token":%q,"new_password":%q,"confirm_password":%q}`, token, password, password)
	key := testkit.Secret(t)
	first := send(t, s.Server.URL, "/v1/password/reset", body, withKey(key))
	if first.Status != http.StatusOK {
		t.Fatalf("reset: %d %s", first.Status, first.Body)
	}
	session := first.Map(t)["session"].(map[string]any)["token"].(string)
	replay := send(t, s.Server.URL, "/v1/password/reset", body, withKey(key))
	if replay.Status != http.StatusOK || !bytes.Equal(replay.Body, first.Body) {
		t.Fatalf("replay: %d %s", replay.Status, replay.Body)
	}
	if r := s.Do(t, "GET", "/v1/me", nil, session); r.Status != http.StatusOK {
		t.Fatalf("the session answers %d", r.Status)
	}
	var dump string
	if err := s.DB.Pool.QueryRow(context.Background(),
		`SELECT string_agg(encode(key, 'escape') || encode(fingerprint, 'escape') || encode(answer, 'escape'), '') FROM idempotency_keys`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{"session token": session, "reset token": token, "password": password, "key": key, "login name": "1001@acme"} {
		if strings.Contains(dump, secret) {
			t.Errorf("the idempotency record holds the %s in clear", name)
		}
	}
	// Without the key, the retry of a reset is what it always was.
	if r := send(t, s.Server.URL, "/v1/password/reset", body, nil); r.Status != http.StatusGone {
		t.Fatalf("reset again without the key: %d %s", r.Status, r.Body)
	}
}

// Keys are the caller's own: the same key from another admin key, or from
// another client address, is another request.
func TestKeysAreScopedToTheCaller(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Env: map[string]string{"TRUSTED_PROXIES": "127.0.0.1"}})
	other, _, err := adminkeys.Create(context.Background(), s.App.Store, "ops", "")
	if err != nil {
		t.Fatal(err)
	}
	key := "order-42"
	if r := send(t, s.Server.URL, "/v1/admin/domains", `{"name":"acme.11111.service"}`, adminWithKey(key)); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	r := send(t, s.Server.URL, "/v1/admin/domains", `{"name":"other.22222.service"}`,
		map[string]string{"Idempotency-Key": key, "Authorization": "Bearer " + other})
	if r.Status != http.StatusCreated {
		t.Fatalf("another admin key, same key, another body: %d %s", r.Status, r.Body)
	}

	createUserWithEmail(t, s, "1001", "jason@example.com")
	a := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, map[string]string{"Idempotency-Key": key, "X-Forwarded-For": "203.0.113.1"})
	b := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, map[string]string{"Idempotency-Key": key, "X-Forwarded-For": "203.0.113.2"})
	c := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, map[string]string{"Idempotency-Key": key, "X-Forwarded-For": "203.0.113.1"})
	if a.Status != http.StatusAccepted || b.Status != http.StatusAccepted || b.Header.Get("Idempotent-Replayed") != "" ||
		c.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("answers %d %v / %d %v / %d %v", a.Status, a.Header, b.Status, b.Header, c.Status, c.Header)
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 2 {
		t.Fatalf("%d reset.requested, want 2: one per client address", n)
	}
}

func TestMalformedKeyIsRefused(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	for name, values := range map[string][]string{
		"empty":     {""},
		"too long":  {strings.Repeat("k", 256)},
		"space":     {"a b"},
		"non-ASCII": {"clé"},
		"twice":     {"a", "b"},
	} {
		req, err := http.NewRequest("POST", s.Server.URL+"/v1/password/forgot", strings.NewReader(forgotBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header["Idempotency-Key"] = values
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := apptest.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
		if r.Status != http.StatusBadRequest || !strings.Contains(string(raw), "invalid_idempotency_key") {
			t.Errorf("%s: %d %s", name, r.Status, raw)
		}
	}
	if n := streamCount(t, s, events.TypeResetRequested); n != 0 {
		t.Fatalf("%d events published for refused requests", n)
	}
	if r := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, withKey(strings.Repeat("k", 255))); r.Status != http.StatusNotFound ||
		!strings.Contains(string(r.Body), "account_not_found") {
		t.Fatalf("a 255-character key: %d %s", r.Status, r.Body)
	}
}

// A record lasts 24 hours: then the key is new, and the same request runs
// (and sends) again; the sweep deletes what has expired.
func TestKeysExpireAfter24Hours(t *testing.T) {
	s, userID := mailStack(t, nil)
	key := testkit.Secret(t)
	if r := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, withKey(key)); r.Status != http.StatusAccepted {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
	settledDelivery(t, s, userID)
	s.Clock.Advance(httpapi.IdempotencyTTL - time.Minute)
	if r := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, withKey(key)); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("within 24 h: %d %v", r.Status, r.Header)
	}
	s.Clock.Advance(2 * time.Minute)
	r := send(t, s.Server.URL, "/v1/password/forgot", forgotBody, withKey(key))
	if r.Status != http.StatusAccepted || r.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("after 24 h: %d %v", r.Status, r.Header)
	}
	// A new record has a new effect: the event is not taken for the old one.
	if n := streamCount(t, s, events.TypeResetRequested); n != 2 {
		t.Fatalf("%d reset.requested, want 2", n)
	}
	if _, err := s.SMTP.WaitForCount(t.Context(), 2); err != nil {
		t.Fatal(err)
	}

	s.Clock.Advance(httpapi.IdempotencyTTL + time.Second)
	n, err := s.App.Store.DeleteExpiredIdempotencyKeys(context.Background(), s.Clock.Now().Add(-httpapi.IdempotencyTTL))
	if err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want 1", n, err)
	}
}
