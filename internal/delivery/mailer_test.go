package delivery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/smtptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

const domain = "acme.11111.service"

func start(t *testing.T, roles []app.Role, env map[string]string) *apptest.Stack {
	t.Helper()
	s := apptest.Start(t, apptest.Options{Roles: roles, Env: env})
	if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": domain}); r.Status != 201 {
		t.Fatalf("create domain: %d %s", r.Status, r.Body)
	}
	return s
}

type user struct{ ID, LoginName string }

func createUsers(t *testing.T, s *apptest.Stack, n int) []user {
	t.Helper()
	users := make([]user, n)
	for i := range users {
		r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{
			"domain": domain, "extension": fmt.Sprint(3000 + i), "email": fmt.Sprintf("user%d@example.com", i),
			"first_name": "Jason", "password": "original passphrase 42",
		})
		if r.Status != 201 {
			t.Fatalf("create user: %d %s", r.Status, r.Body)
		}
		m := r.Map(t)
		users[i] = user{ID: m["id"].(string), LoginName: m["login_name"].(string)}
	}
	return users
}

func forgot(t *testing.T, s *apptest.Stack, u user) {
	t.Helper()
	if r := s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": u.LoginName}, ""); r.Status != 202 {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
}

// deliveryIDOf reads the delivery id a mail.requested names.
func deliveryIDOf(t *testing.T, e events.Event) string {
	t.Helper()
	var data struct {
		DeliveryID string `json:"delivery_id"`
	}
	if err := e.DecodeData(&data); err != nil {
		t.Fatal(err)
	}
	return data.DeliveryID
}

// deliveryRow is a delivery as the database has it.
func deliveryRow(t *testing.T, s *apptest.Stack, id string) (status string, attempts int, lastError string) {
	t.Helper()
	err := s.DB.Pool.QueryRow(context.Background(),
		"SELECT status, attempts, last_error FROM mail_deliveries WHERE id = $1", id).Scan(&status, &attempts, &lastError)
	if err != nil {
		t.Fatal(err)
	}
	return status, attempts, lastError
}

// sentPerDelivery counts the emails the SMTP server accepted by delivery id
// (their Message-ID).
func sentPerDelivery(t *testing.T, msgs []smtptest.Message) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range msgs {
		p, err := m.Parse()
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(p.Get("Message-ID"), "<"), "@latchkey>")]++
	}
	return out
}

// TestSameDeliveryTwiceInOneBatchIsSentOnce: two mail.requested for one
// delivery in one batch (a re-publish after the de-duplication window, or a
// redelivered prefetched message). Before, the claim was made once and both
// items sent: two emails.
func TestSameDeliveryTwiceInOneBatchIsSentOnce(t *testing.T) {
	s := start(t, []app.Role{app.RoleTokens}, nil) // no mailer: the test is the mailer
	u := createUsers(t, s, 1)[0]
	forgot(t, s, u)
	e := s.MailRequests(t, 1)[0]
	handlers, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	errs := handlers[events.TypeMailRequested](context.Background(), []events.Item{{Event: e, Attempt: 1}, {Event: e, Attempt: 2}})
	for i, err := range errs {
		if err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
	s.WaitMail(t, 1)
	time.Sleep(500 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails for one delivery requested twice in one batch", n)
	}
	if status, attempts, _ := deliveryRow(t, s, deliveryIDOf(t, e)); status != "sent" || attempts != 1 {
		t.Fatalf("delivery %s after %d attempts, want sent after 1", status, attempts)
	}
}

// TestDeliveryOfAUserGoneIsSkipped: the user of a queued delivery is deleted
// before the mailer claims it. Before, the claim set it "sending" without
// returning it, and the event retried as "being sent by another worker"
// until it was dead-lettered with that wrong reason.
func TestDeliveryOfAUserGoneIsSkipped(t *testing.T) {
	s := start(t, []app.Role{app.RoleTokens}, nil)
	u := createUsers(t, s, 1)[0]
	forgot(t, s, u)
	e := s.MailRequests(t, 1)[0]
	if _, err := s.DB.Pool.Exec(context.Background(), "DELETE FROM users WHERE id = $1", u.ID); err != nil {
		t.Fatal(err)
	}
	handlers, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	if errs := handlers[events.TypeMailRequested](context.Background(), []events.Item{{Event: e, Attempt: 1}}); errs[0] != nil {
		t.Fatalf("mail request of a deleted user: %v (want done)", errs[0])
	}
	status, _, lastError := deliveryRow(t, s, deliveryIDOf(t, e))
	if status != "skipped" || !strings.Contains(lastError, "no longer exists") {
		t.Fatalf("delivery %s (%q), want skipped because the account no longer exists", status, lastError)
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.SMTP.Count(); n != 0 {
		t.Fatalf("%d emails to a deleted user", n)
	}
}

// TestClaimLeaseCoversEverySendOfASlowBatch: a batch of four sends one email
// at a time to a slow relay, and by the time it reaches the last one its
// claim lease has run out (the clock jumps past it). A second worker gets
// the last delivery's request again meanwhile. Before, it found the claim
// stale, claimed and sent it, and the first worker sent it too: five emails
// for four deliveries.
func TestClaimLeaseCoversEverySendOfASlowBatch(t *testing.T) {
	s := start(t, []app.Role{app.RoleTokens}, map[string]string{"SMTP_POOL": "1"})
	users := createUsers(t, s, 4)
	for _, u := range users {
		forgot(t, s, u)
	}
	reqs := s.MailRequests(t, 4)
	workerA, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	workerB, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	s.SMTP.SetDelay(400 * time.Millisecond)
	items := make([]events.Item, len(reqs))
	for i, e := range reqs {
		items[i] = events.Item{Event: e, Attempt: 1}
	}
	done := make(chan []error, 1)
	go func() { done <- workerA[events.TypeMailRequested](context.Background(), items) }()
	s.WaitMail(t, 2) // worker A is on its third send
	s.Clock.Advance(10 * time.Minute)
	last := events.Item{Event: reqs[3], Attempt: 2}
	errB := workerB[events.TypeMailRequested](context.Background(), []events.Item{last})[0]
	var errsA []error
	select {
	case errsA = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("worker A's batch did not end")
	}
	time.Sleep(500 * time.Millisecond)
	msgs := s.SMTP.Messages()
	for id, n := range sentPerDelivery(t, msgs) {
		if n != 1 {
			t.Errorf("delivery %s sent %d times", id, n)
		}
	}
	if len(msgs) != 4 {
		t.Fatalf("%d emails for 4 deliveries (worker A: %v; worker B: %v)", len(msgs), errsA, errB)
	}
}

// TestLostPublishAcksHoldUpNoEmail: the stream stores events but sends no
// acknowledgement (NoAck; to a client, a clustered stream electing a leader
// looks like that). Before, the mailer waited forever for the PubAck of
// each batch's mail.delivered: two batches held both runner slots and no
// email went out after them, and shutdown hung. The outcome events are not
// lost either: once the stream acknowledges again, they are published.
func TestLostPublishAcksHoldUpNoEmail(t *testing.T) {
	s := start(t, []app.Role{app.RoleTokens, app.RoleMailer}, map[string]string{"SHUTDOWN_TIMEOUT": "5s"})
	users := createUsers(t, s, 4)
	ctx := context.Background()
	setNoAck(t, s, true)
	for i, u := range users {
		e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"user_id": u.ID}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		msg, err := encode(e)
		if err != nil {
			t.Fatal(err)
		}
		// A core publish: the test must not wait for the missing ack itself.
		if err := s.App.NATS.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		s.WaitMail(t, i+1) // one at a time: each email is its own mailer batch
	}
	setNoAck(t, s, false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		delivered := map[string]bool{}
		info, err := s.App.Stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			if m, err := s.App.Stream.GetMsg(ctx, seq); err == nil && m.Subject == events.SubjectPrefix+events.TypeMailDelivered {
				e, err := events.Decode(m.Subject, m.Data)
				if err != nil {
					t.Fatal(err)
				}
				delivered[e.ID] = true
			}
		}
		if len(delivered) == len(users) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d mail.delivered events reached the stream\nlogs:\n%s", len(delivered), len(users), s.Logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.SMTP.Count(); n != len(users) {
		t.Fatalf("%d emails for %d requests", n, len(users))
	}
}

func encode(e events.Event) (*nats.Msg, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(e.NATSSubject())
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, e.ID)
	return msg, nil
}

// setNoAck makes the stream store messages without acknowledging them, or
// acknowledge them again.
func setNoAck(t *testing.T, s *apptest.Stack, noAck bool) {
	t.Helper()
	ctx := context.Background()
	info, err := s.App.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.NoAck = noAck
	if _, err := s.App.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("set NoAck %v: %v", noAck, err)
	}
}
