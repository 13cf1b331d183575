package recovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
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

const (
	domain      = "acme.11111.service"
	oldPassword = "original passphrase 42"
	newPassword = "brand new passphrase 43"
)

var workers = []app.Role{app.RoleTokens, app.RoleMailer, app.RoleNotifier}

func start(t *testing.T, env map[string]string) *apptest.Stack {
	t.Helper()
	s := apptest.Start(t, apptest.Options{Roles: workers, Env: env})
	if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": domain}); r.Status != 201 {
		t.Fatalf("create domain: %d %s", r.Status, r.Body)
	}
	return s
}

type user struct {
	ID, LoginName, Email string
}

func createUser(t *testing.T, s *apptest.Stack, ext, email, locale string) user {
	t.Helper()
	r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": domain, "extension": ext, "email": email, "first_name": "Jason", "last_name": "Lord",
		"locale": locale, "password": oldPassword,
	})
	if r.Status != 201 {
		t.Fatalf("create user: %d %s", r.Status, r.Body)
	}
	m := r.Map(t)
	return user{ID: m["id"].(string), LoginName: m["login_name"].(string), Email: email}
}

func parse(t *testing.T, m smtptest.Message) *smtptest.Parsed {
	t.Helper()
	p, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var resetLink = regexp.MustCompile(regexp.QuoteMeta(apptest.PublicBaseURL) + `/reset\?token=([A-Za-z0-9_-]+)`)

func tokenFrom(t *testing.T, p *smtptest.Parsed) string {
	t.Helper()
	m := resetLink.FindStringSubmatch(p.Text)
	if m == nil {
		t.Fatalf("no reset link in the text part:\n%s", p.Text)
	}
	return m[1]
}

func forgot(t *testing.T, s *apptest.Stack, identifier string) apptest.Response {
	t.Helper()
	return s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": identifier}, "")
}

func reset(t *testing.T, s *apptest.Stack, token, pw, confirm string) apptest.Response {
	t.Helper()
	return s.Do(t, "POST", "/v1/password/reset", map[string]string{"token": token, "new_password": pw, "confirm_password": confirm}, "")
}

func login(t *testing.T, s *apptest.Stack, loginName, secret string) apptest.Response {
	t.Helper()
	return s.Do(t, "POST", "/v1/login", map[string]string{"login_name": loginName, "secret": secret}, "")
}

func expectStatus(t *testing.T, r apptest.Response, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if len(r.Body) == 0 {
		return nil
	}
	return r.Map(t)
}

func TestForgotResetLoginEndToEnd(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	before := login(t, s, u.LoginName, oldPassword)
	oldSession := expectStatus(t, before, 200)["session"].(map[string]any)["token"].(string)

	m := expectStatus(t, forgot(t, s, u.LoginName), 202)
	if m["message"] != "Your request has been processed. Please check your email!" {
		t.Fatalf("message = %q", m["message"])
	}
	mail := parse(t, s.WaitMail(t, 1)[0])
	if mail.Subject != "Username and Password change request" {
		t.Fatalf("subject = %q", mail.Subject)
	}
	if from := mail.Get("From"); from != `"Latchkey" <no-reply@latchkey.localhost>` && from != "Latchkey <no-reply@latchkey.localhost>" {
		t.Fatalf("From = %q", from)
	}
	for _, want := range []string{"Forgot Username/Password", "Hi Jason", "Your username: " + u.LoginName,
		"If you do not want to change your password, please ignore this email."} {
		if !strings.Contains(mail.Text, want) {
			t.Errorf("text part lacks %q:\n%s", want, mail.Text)
		}
	}
	token := tokenFrom(t, mail)
	if !strings.Contains(mail.HTML, token) || !strings.Contains(mail.HTML, "Jason") || !strings.Contains(mail.HTML, u.LoginName) {
		t.Errorf("HTML part lacks the link, name or username:\n%s", mail.HTML)
	}

	info := expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""), 200)
	if info["purpose"] != "reset" || info["login_name"] != u.LoginName || info["expires_at"] == "" {
		t.Fatalf("inspect = %v", info)
	}

	bad := expectStatus(t, reset(t, s, token, newPassword, newPassword+"x"), 422)
	if bad["detail"] != "New password and Confirm new password must be the same." {
		t.Fatalf("mismatch detail = %q", bad["detail"])
	}
	short := expectStatus(t, reset(t, s, token, "short", "short"), 422)
	if short["detail"] != "New password must be between 8 and 64 characters long." {
		t.Fatalf("short detail = %q", short["detail"])
	}

	ok := expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
	if ok["message"] != "The password has been changed." || ok["login_name"] != u.LoginName {
		t.Fatalf("reset = %v", ok)
	}
	session := ok["session"].(map[string]any)["token"].(string)
	me := expectStatus(t, s.Do(t, "GET", "/v1/me", nil, session), 200)
	if me["login_name"] != u.LoginName {
		t.Fatalf("me = %v", me)
	}
	expectStatus(t, login(t, s, u.LoginName, newPassword), 200)
	failed := expectStatus(t, login(t, s, u.LoginName, oldPassword), 401)
	if failed["code"] != "invalid_credentials" {
		t.Fatalf("old password: %v", failed)
	}
	// The password change ended the session from before the reset.
	expectStatus(t, s.Do(t, "GET", "/v1/me", nil, oldSession), 401)

	again := expectStatus(t, reset(t, s, token, "another passphrase 44", "another passphrase 44"), 410)
	if again["code"] != "link_expired" || again["detail"] != "Link expired, you have to repeat the activation process." {
		t.Fatalf("second use = %v", again)
	}
	expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""), 410)

	// The notifier tells the user, without the password.
	changed := parse(t, s.WaitMail(t, 2)[1])
	if !strings.Contains(strings.ToLower(changed.Subject), "password") || strings.Contains(changed.Text, newPassword) ||
		strings.Contains(changed.HTML, newPassword) {
		t.Fatalf("password-changed mail: %q\n%s", changed.Subject, changed.Text)
	}

	// Nothing secret reached the logs or the event stream.
	for _, secret := range []string{token, newPassword, oldPassword, session, oldSession} {
		if s.Logs.Contains(secret) {
			t.Errorf("a secret appears in the logs: %.12s…", secret)
		}
	}
	assertStreamFreeOf(t, s, token, newPassword, oldPassword, session)

	// The mailer records a batch's outcomes right after its sends, so the
	// SMTP server may have the message a moment before the row says sent.
	items := waitDeliveries(t, s, u.ID, func(items []map[string]any) bool {
		for _, d := range items {
			if d["status"] == "sending" || d["status"] == "queued" {
				return false
			}
		}
		return len(items) == 2
	})
	for _, d := range items {
		if d["status"] != "sent" || d["attempts"] != float64(1) {
			t.Errorf("delivery %v", d)
		}
	}
}

// waitDeliveries polls the user's deliveries until done accepts them.
func waitDeliveries(t *testing.T, s *apptest.Stack, userID string, done func([]map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var deliveries struct{ Items []map[string]any }
		s.Admin(t, "GET", "/v1/admin/deliveries?user_id="+userID, nil).JSON(t, &deliveries)
		if done(deliveries.Items) {
			return deliveries.Items
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries never settled: %v", deliveries.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func assertStreamFreeOf(t *testing.T, s *apptest.Stack, secrets ...string) {
	t.Helper()
	ctx := context.Background()
	info, err := s.App.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := s.App.Stream.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		for _, secret := range secrets {
			if strings.Contains(string(msg.Data), secret) {
				t.Errorf("event %s (seq %d) contains a secret", msg.Subject, seq)
			}
		}
	}
}

func TestFrenchUserGetsFrenchEmail(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "fr-CA")
	expectStatus(t, forgot(t, s, u.Email), 202)
	mail := parse(t, s.WaitMail(t, 1)[0])
	if mail.Subject != "Demande de modification du nom d'utilisateur et du mot de passe" || !strings.Contains(mail.Text, "Jason") {
		t.Fatalf("fr-CA user got: %q\n%s", mail.Subject, mail.Text)
	}
	tokenFrom(t, mail)
}

func TestExplicitDisclosure(t *testing.T) {
	s := start(t, nil)
	createUser(t, s, "1001", "shared@example.com", "")
	if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "abc-company.11111.service"}); r.Status != 201 {
		t.Fatal(r.Status)
	}
	if r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "abc-company.11111.service", "extension": "1001", "email": "shared@example.com"}); r.Status != 201 {
		t.Fatal(r.Status)
	}
	nf := expectStatus(t, forgot(t, s, "nobody@example.com"), 404)
	if nf["code"] != "account_not_found" || nf["detail"] != "Username or email does not exist. Please enter a valid one." {
		t.Fatalf("unknown = %v", nf)
	}
	amb := expectStatus(t, forgot(t, s, "SHARED@example.com"), 409)
	if amb["code"] != "account_ambiguous" || !strings.Contains(amb["detail"].(string), "administrator") {
		t.Fatalf("ambiguous = %v", amb)
	}
	for _, bad := range []string{`{"identifier":["a","b"]}`, `{"identifier":"a@x.com, b@y.com"}`,
		`{"identifier":"1001@acme.11111.service\r\nBcc: evil@x.com"}`, `{"identifier":""}`, `{"identifier":{"$ne":""}}`} {
		r := s.Do(t, "POST", "/v1/password/forgot", bad, "")
		if r.Status != 422 && r.Status != 400 {
			t.Errorf("%s: %d %s", bad, r.Status, r.Body)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.SMTP.Count(); n != 0 {
		t.Fatalf("%d emails sent for refused requests", n)
	}
}

func TestUniformDisclosure(t *testing.T) {
	s := start(t, map[string]string{"DISCLOSURE": "uniform"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	unknown := forgot(t, s, "nobody@example.com")
	known := forgot(t, s, u.LoginName)
	if unknown.Status != 202 || known.Status != 202 || string(unknown.Body) != string(known.Body) {
		t.Fatalf("unknown %d %s / known %d %s", unknown.Status, unknown.Body, known.Status, known.Body)
	}
	mail := parse(t, s.WaitMail(t, 1)[0])
	tokenFrom(t, mail)
	time.Sleep(500 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails, want 1 (none for the unknown identifier)", n)
	}
}

func TestExpiredLinkIsGone(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	token := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	s.Clock.Advance(31 * time.Minute)
	expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""), 410)
	r := expectStatus(t, reset(t, s, token, newPassword, newPassword), 410)
	if r["detail"] != "Link expired, you have to repeat the activation process." {
		t.Fatalf("expired = %v", r)
	}
	expectStatus(t, login(t, s, u.LoginName, oldPassword), 200)
}

func TestSecondRequestKillsFirstLink(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	first := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	expectStatus(t, forgot(t, s, u.Email), 202)
	second := tokenFrom(t, parse(t, s.WaitMail(t, 2)[1]))
	if first == second {
		t.Fatal("the second email carries the same token")
	}
	expectStatus(t, reset(t, s, first, newPassword, newPassword), 410)
	expectStatus(t, reset(t, s, second, newPassword, newPassword), 200)
}

func TestConcurrentResetsWithOneToken(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	token := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	// Each request hashes its password before it races for the token.
	const n = 10
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw := fmt.Sprintf("racing passphrase number %02d", i)
			statuses[i] = reset(t, s, token, pw, pw).Status
		}()
	}
	wg.Wait()
	wins := 0
	for i, st := range statuses {
		switch st {
		case 200:
			wins++
		case 410:
		default:
			t.Errorf("request %d: status %d", i, st)
		}
	}
	if wins != 1 {
		t.Fatalf("%d resets succeeded with one token, want exactly 1 (%v)", wins, statuses)
	}
	var changes int
	if err := s.DB.Pool.QueryRow(context.Background(),
		"SELECT count(*) FROM audit_events WHERE kind = 'password.changed' AND user_id = $1", u.ID).Scan(&changes); err != nil || changes != 1 {
		t.Fatalf("password changed %d times (%v)", changes, err)
	}
}

// TestRedeliveredResetEventSendsOneEmail publishes the same event twice past
// JetStream's de-duplication, as a redelivery after a crash would present it.
func TestRedeliveredResetEventSendsOneEmail(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"user_id": u.ID, "actor_kind": "self"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(e)
	ctx := context.Background()
	for i := range 3 {
		msg := nats.NewMsg(e.NATSSubject())
		msg.Data = body
		if _, err := s.App.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s-copy-%d", e.ID, i))); err != nil {
			t.Fatal(err)
		}
	}
	s.WaitMail(t, 1)
	waitConsumed(t, s, "tokens", 3)
	waitConsumed(t, s, "mailer", 1)
	time.Sleep(300 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails for one event delivered three times", n)
	}
	var tokens int
	if err := s.DB.Pool.QueryRow(ctx, "SELECT count(*) FROM tokens WHERE user_id = $1", u.ID).Scan(&tokens); err != nil || tokens != 1 {
		t.Fatalf("%d tokens minted (%v), want 1", tokens, err)
	}
}

// waitConsumed waits until the consumer has acked at least n messages.
func waitConsumed(t *testing.T, s *apptest.Stack, consumer string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := s.App.Stream.Consumer(context.Background(), consumer)
		if err == nil {
			info, err := c.Info(context.Background())
			if err == nil && info.AckFloor.Consumer >= n && info.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s did not ack %d messages", consumer, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTransientSMTPFailureIsRetriedOnce(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	s.SMTP.FailNext(1, smtptest.Reply{Code: 451, EnhancedCode: [3]int{4, 3, 0}, Message: "greylisted, try again"})
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	mail := parse(t, s.WaitMail(t, 1)[0])
	token := tokenFrom(t, mail)
	waitConsumed(t, s, "mailer", 1)
	time.Sleep(300 * time.Millisecond)
	if st := s.SMTP.Stats(); st.Accepted != 1 || st.Rejected != 1 {
		t.Fatalf("smtp stats = %+v, want one rejected then one accepted", st)
	}
	var d struct{ Items []map[string]any }
	s.Admin(t, "GET", "/v1/admin/deliveries?user_id="+u.ID, nil).JSON(t, &d)
	if len(d.Items) != 1 || d.Items[0]["status"] != "sent" || d.Items[0]["attempts"] != float64(2) {
		t.Fatalf("deliveries = %v", d.Items)
	}
	// The link of the accepted message is the valid one.
	expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
}

func TestPermanentSMTPFailureDeadLettersWithoutRetry(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	s.SMTP.FailNext(1, smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "no such mailbox here"})
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	var dead struct{ Items []map[string]any }
	deadline := time.Now().Add(20 * time.Second)
	for len(dead.Items) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		s.Admin(t, "GET", "/v1/admin/dead-letters", nil).JSON(t, &dead)
	}
	if len(dead.Items) != 1 || dead.Items[0]["type"] != "mail.requested" ||
		!strings.Contains(dead.Items[0]["reason"].(string), "no such mailbox here") ||
		!strings.Contains(dead.Items[0]["reason"].(string), "550") || dead.Items[0]["attempts"] != float64(1) {
		t.Fatalf("dead letters = %v", dead.Items)
	}
	var d struct{ Items []map[string]any }
	s.Admin(t, "GET", "/v1/admin/deliveries?user_id="+u.ID, nil).JSON(t, &d)
	if len(d.Items) != 1 || d.Items[0]["status"] != "failed" || !strings.Contains(d.Items[0]["last_error"].(string), "550") {
		t.Fatalf("deliveries = %v", d.Items)
	}
	time.Sleep(1500 * time.Millisecond)
	if st := s.SMTP.Stats(); st.Rejected != 1 || st.Accepted != 0 {
		t.Fatalf("smtp stats = %+v: a 550 must not be retried", st)
	}
}

func TestBurstForOneAccountIsLimited(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	limited := 0
	for i := range 12 {
		id := u.LoginName
		if i%2 == 1 {
			id = u.Email // the limit is per account, whatever names it
		}
		r := forgot(t, s, id)
		switch r.Status {
		case 202:
		case 429:
			limited++
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		default:
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
	}
	if limited != 7 {
		t.Fatalf("%d of 12 requests limited, want 7 (limit 5/15m)", limited)
	}
	// At most the limit; fewer when a newer request supersedes an older one
	// before it is sent (its link would be dead anyway).
	assertNewestLinkOnly(t, s, u, 5)
}

// assertNewestLinkOnly waits for the pipeline to go quiet, then checks that
// between 1 and max emails went out and that the newest request's email
// (found by its Message-ID, the delivery id) has a working link. Emails of
// one user sent at the same moment may arrive in either order.
func assertNewestLinkOnly(t *testing.T, s *apptest.Stack, u user, max int) {
	t.Helper()
	s.WaitMail(t, 1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var open int
		if err := s.DB.Pool.QueryRow(context.Background(),
			"SELECT count(*) FROM mail_deliveries WHERE status IN ('queued', 'sending')").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still open", open)
		}
		time.Sleep(50 * time.Millisecond)
	}
	msgs := s.SMTP.Messages()
	if len(msgs) < 1 || len(msgs) > max {
		t.Fatalf("%d emails, want 1 to %d", len(msgs), max)
	}
	var newest string
	if err := s.DB.Pool.QueryRow(context.Background(),
		"SELECT id::text FROM mail_deliveries WHERE status = 'sent' AND user_id = $1 ORDER BY created_at DESC LIMIT 1", u.ID).Scan(&newest); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		p := parse(t, m)
		if strings.Contains(p.Get("Message-Id"), newest) {
			expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": tokenFrom(t, p)}, ""), 200)
			return
		}
	}
	t.Fatalf("no email for the newest delivery %s", newest)
}

func TestLinkIgnoresHostHeader(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	req, _ := http.NewRequest("POST", s.Server.URL+"/v1/password/forgot", strings.NewReader(`{"identifier":"`+u.LoginName+`"}`))
	req.Host = "evil.example"
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	mail := parse(t, s.WaitMail(t, 1)[0])
	if strings.Contains(mail.Text+mail.HTML, "evil.example") {
		t.Fatal("the Host header leaked into the email")
	}
	link := resetLink.FindString(mail.Text)
	if pu, err := url.Parse(link); err != nil || pu.Host != "portal.example.test" {
		t.Fatalf("link %q", link)
	}
}

func TestLockoutAndLogout(t *testing.T) {
	s := start(t, map[string]string{"LOCKOUT_THRESHOLD": "3"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	unknown := login(t, s, "nobody@nowhere", "whatever it is")
	wrong := login(t, s, u.LoginName, "wrong passphrase")
	if unknown.Status != 401 || wrong.Status != 401 || string(unknown.Map(t)["detail"].(string)) != wrong.Map(t)["detail"].(string) {
		t.Fatalf("unknown %d %s / wrong %d %s", unknown.Status, unknown.Body, wrong.Status, wrong.Body)
	}
	login(t, s, u.LoginName, "wrong passphrase")
	login(t, s, u.LoginName, "wrong passphrase")
	locked := login(t, s, u.LoginName, oldPassword)
	if m := expectStatus(t, locked, 423); m["code"] != "account_locked" || locked.Header.Get("Retry-After") == "" {
		t.Fatalf("locked = %v", m)
	}
	s.Clock.Advance(16 * time.Minute)
	r := expectStatus(t, login(t, s, u.LoginName, oldPassword), 200)
	session := r["session"].(map[string]any)["token"].(string)
	expectStatus(t, s.Do(t, "GET", "/v1/me", nil, session), 200)
	if r := s.Do(t, "POST", "/v1/logout", nil, session); r.Status != 204 {
		t.Fatalf("logout %d", r.Status)
	}
	expectStatus(t, s.Do(t, "GET", "/v1/me", nil, session), 401)
	var locks int
	if err := s.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE kind = 'account.locked'").Scan(&locks); err != nil || locks != 1 {
		t.Fatalf("account.locked audited %d times (%v)", locks, err)
	}
}

func TestAdminInitiatedReset(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, s.Admin(t, "POST", "/v1/admin/users/"+u.ID+"/password-reset", nil), 202)
	tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	expectStatus(t, s.Admin(t, "POST", "/v1/admin/users/00000000-0000-0000-0000-000000000000/password-reset", nil), 404)
	expectStatus(t, s.Do(t, "POST", "/v1/admin/users/"+u.ID+"/password-reset", nil, ""), 401)
	var kinds []string
	rows, err := s.DB.Pool.Query(context.Background(), "SELECT actor_kind FROM audit_events WHERE kind = 'reset.requested'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		kinds = append(kinds, k)
	}
	if len(kinds) != 1 || kinds[0] != "admin" {
		t.Fatalf("reset.requested audited as %v", kinds)
	}
}

// TestRedeliveredMailRequestSendsOnce: after the mailer sent a delivery, the
// same mail.requested arriving again (a crash between the SMTP reply and
// the ack) sends nothing, because the delivery is recorded as sent.
func TestRedeliveredMailRequestSendsOnce(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	s.WaitMail(t, 1)
	waitConsumed(t, s, "mailer", 1)
	ctx := context.Background()
	info, err := s.App.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mailReq *jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if m, err := s.App.Stream.GetMsg(ctx, seq); err == nil && m.Subject == "latchkey.mail.requested" {
			mailReq = m
		}
	}
	if mailReq == nil {
		t.Fatal("no mail.requested in the stream")
	}
	msg := nats.NewMsg(mailReq.Subject)
	msg.Data = mailReq.Data
	if _, err := s.App.JS.PublishMsg(ctx, msg, jetstream.WithMsgID("redelivery-of-"+fmt.Sprint(mailReq.Sequence))); err != nil {
		t.Fatal(err)
	}
	waitConsumed(t, s, "mailer", 2)
	time.Sleep(300 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails after the mail request was delivered twice", n)
	}
}

// TestRedeliveryAtTheLimitStillPublishes: the event whose delivery reached
// the per-account limit is redelivered; it must re-publish, not count itself.
func TestRedeliveryAtTheLimitStillPublishes(t *testing.T) {
	s := start(t, map[string]string{"RATE_LIMIT_PER_ACCOUNT": "1/15m"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"user_id": u.ID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(e)
	for i := range 2 {
		msg := nats.NewMsg(e.NATSSubject())
		msg.Data = body
		if _, err := s.App.JS.PublishMsg(context.Background(), msg, jetstream.WithMsgID(fmt.Sprintf("copy-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitConsumed(t, s, "tokens", 2)
	var suppressed int
	if err := s.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE kind = 'reset.suppressed'").Scan(&suppressed); err != nil || suppressed != 0 {
		t.Fatalf("the redelivered event was suppressed by its own delivery (%d, %v)", suppressed, err)
	}
	s.WaitMail(t, 1)
}

// TestConcurrentEventsRespectTheAccountLimit publishes many distinct
// requests for one account at once, as backends publishing directly would:
// the workers, handling them concurrently, send exactly the limit.
func TestConcurrentEventsRespectTheAccountLimit(t *testing.T) {
	s := start(t, map[string]string{"RATE_LIMIT_PER_ACCOUNT": "2/15m"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	pub := events.NewPublisher(s.App.JS)
	for range 8 {
		e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"user_id": u.ID}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	waitConsumed(t, s, "tokens", 8)
	assertNewestLinkOnly(t, s, u, 2)
	var queued int
	if err := s.DB.Pool.QueryRow(context.Background(),
		"SELECT count(*) FROM mail_deliveries WHERE status <> 'skipped'").Scan(&queued); err != nil || queued > 2 {
		t.Fatalf("%d deliveries decided to send, limit 2 (%v)", queued, err)
	}
}

// mailRequestsInStream returns the mail.requested messages of the stream.
func mailRequestsInStream(t *testing.T, s *apptest.Stack) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	info, err := s.App.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if m, err := s.App.Stream.GetMsg(ctx, seq); err == nil && m.Subject == "latchkey.mail.requested" {
			out = append(out, m)
		}
	}
	return out
}

func republish(t *testing.T, s *apptest.Stack, m *jetstream.RawStreamMsg, id string) {
	t.Helper()
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	if _, err := s.App.JS.PublishMsg(context.Background(), msg, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// TestDeliveryBeingSentIsNotClaimedTwice: a second mail.requested for a
// delivery arrives while the first send is still in flight.
func TestDeliveryBeingSentIsNotClaimedTwice(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	s.SMTP.SetDelay(1500 * time.Millisecond)
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	var reqs []*jetstream.RawStreamMsg
	deadline := time.Now().Add(10 * time.Second)
	for len(reqs) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		reqs = mailRequestsInStream(t, s)
	}
	if len(reqs) != 1 {
		t.Fatalf("%d mail requests", len(reqs))
	}
	time.Sleep(300 * time.Millisecond) // the first send is now waiting on the server
	republish(t, s, reqs[0], "duplicate-during-send")
	token := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	time.Sleep(2 * time.Second)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails for one delivery", n)
	}
	expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""), 200)
}

// TestSentButNotRecordedIsNotResent: the database refuses to record "sent"
// once, after the SMTP server accepted the message.
func TestSentButNotRecordedIsNotResent(t *testing.T) {
	s := start(t, nil)
	u := createUser(t, s, "1001", "jason@example.com", "")
	ctx := context.Background()
	for _, stmt := range []string{
		`CREATE SEQUENCE fail_sent_once`,
		`CREATE FUNCTION fail_sent_once() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN
		   IF NEW.status = 'sent' AND nextval('fail_sent_once') = 1 THEN RAISE EXCEPTION 'injected failure'; END IF;
		   RETURN NEW;
		 END $$`,
		`CREATE TRIGGER fail_sent_once BEFORE UPDATE ON mail_deliveries FOR EACH ROW EXECUTE FUNCTION fail_sent_once()`,
	} {
		if _, err := s.DB.Pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	token := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))
	waitConsumed(t, s, "mailer", 1)
	time.Sleep(1500 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails: a failed bookkeeping write resent the email", n)
	}
	expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
}

// TestSlowSMTPWithShortAckWaitSendsOnce: sends slower than the server's
// patience with a small ack wait must not turn into redeliveries and resends.
func TestSlowSMTPWithShortAckWaitSendsOnce(t *testing.T) {
	s := start(t, map[string]string{"EVENT_ACK_WAIT": "2s", "SMTP_POOL": "4"})
	const n = 16
	for i := range n {
		u := createUser(t, s, fmt.Sprint(2000+i), fmt.Sprintf("u%d@example.com", i), "")
		expectStatus(t, forgot(t, s, u.LoginName), 202)
	}
	s.SMTP.SetDelay(700 * time.Millisecond)
	s.WaitMail(t, n)
	waitConsumed(t, s, "mailer", n)
	time.Sleep(2 * time.Second)
	if got := s.SMTP.Count(); got != n {
		t.Fatalf("%d emails for %d requests", got, n)
	}
}

// TestExpiredLockStartsANewCount: after a lock expires, one wrong password
// must not lock the account again, and each lock is audited.
func TestExpiredLockStartsANewCount(t *testing.T) {
	s := start(t, map[string]string{"LOCKOUT_THRESHOLD": "3"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	for range 3 {
		login(t, s, u.LoginName, "wrong passphrase")
	}
	expectStatus(t, login(t, s, u.LoginName, oldPassword), 423)
	s.Clock.Advance(16 * time.Minute)
	expectStatus(t, login(t, s, u.LoginName, "wrong passphrase"), 401)
	expectStatus(t, login(t, s, u.LoginName, oldPassword), 200)
	for range 3 {
		login(t, s, u.LoginName, "wrong passphrase")
	}
	expectStatus(t, login(t, s, u.LoginName, oldPassword), 423)
	var locks int
	if err := s.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE kind = 'account.locked'").Scan(&locks); err != nil || locks != 2 {
		t.Fatalf("two locks audited %d times (%v)", locks, err)
	}
}

func TestControlCharactersAreRefusedNot500(t *testing.T) {
	s := start(t, nil)
	for _, body := range []string{`{"login_name":"a\u0000b","secret":"x"}`, `{"login_name":"a\nb","secret":"x"}`} {
		if r := s.Do(t, "POST", "/v1/login", body, ""); r.Status != 401 {
			t.Errorf("login %s: %d %s", body, r.Status, r.Body)
		}
	}
	if r := s.Admin(t, "GET", "/v1/admin/users?domain=a%00b", nil); r.Status != 400 && r.Status != 404 {
		t.Errorf("domain with NUL: %d %s", r.Status, r.Body)
	}
	if r := s.Do(t, "POST", "/v1/password/forgot", `{"identifier":"a\u0000b"}`, ""); r.Status != 422 {
		t.Errorf("forgot with NUL: %d %s", r.Status, r.Body)
	}
}

// TestOlderEmailHandledLastDoesNotKillTheNewerLink: two reset emails for one
// user are handled out of order (several mailers, a backlog); the older one
// must not revoke the newer one's link.
func TestOlderEmailHandledLastDoesNotKillTheNewerLink(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Roles: []app.Role{app.RoleTokens}}) // no mailer yet
	if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": domain}); r.Status != 201 {
		t.Fatal(r.Status)
	}
	u := createUser(t, s, "1001", "jason@example.com", "")
	var reqs []*jetstream.RawStreamMsg
	// One request at a time, so each is decided in its own batch (within a
	// batch the older one is superseded before a mail request exists).
	for _, id := range []string{u.LoginName, u.Email} {
		expectStatus(t, forgot(t, s, id), 202)
		want := len(reqs) + 1
		deadline := time.Now().Add(10 * time.Second)
		for len(reqs) < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			reqs = mailRequestsInStream(t, s)
		}
	}
	if len(reqs) != 2 {
		t.Fatalf("%d mail requests", len(reqs))
	}
	handlers, err := s.App.Handlers()
	if err != nil {
		t.Fatal(err)
	}
	mail := handlers[events.TypeMailRequested]
	for _, raw := range []*jetstream.RawStreamMsg{reqs[1], reqs[0]} { // newer first
		e, err := events.Decode(raw.Subject, raw.Data)
		if err != nil {
			t.Fatal(err)
		}
		if errs := mail(context.Background(), []events.Item{{Event: e, Attempt: 1}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	msgs := s.WaitMail(t, 1)
	time.Sleep(300 * time.Millisecond)
	if n := s.SMTP.Count(); n != 1 {
		t.Fatalf("%d emails: the superseded older email was sent too", n)
	}
	token := tokenFrom(t, parse(t, msgs[0]))
	expectStatus(t, s.Do(t, "POST", "/v1/tokens/inspect", map[string]string{"token": token}, ""), 200)
}

// TestUnnameableIdentifierFromABackend: a reset.requested published with an
// identifier no account can have is audited as unresolved, not retried.
func TestUnnameableIdentifierFromABackend(t *testing.T) {
	s := start(t, nil)
	e, err := events.New("portal", events.TypeResetRequested, "", map[string]any{"identifier": "a\u0000b"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.NewPublisher(s.App.JS).Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	waitConsumed(t, s, "tokens", 1)
	var unresolved, dead int
	db := s.DB.Pool
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE kind = 'reset.unresolved'").Scan(&unresolved); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM dead_letters").Scan(&dead); err != nil {
		t.Fatal(err)
	}
	if unresolved != 1 || dead != 0 {
		t.Fatalf("unresolved %d, dead letters %d", unresolved, dead)
	}
}

// TestLoginInFlightDoesNotOutliveAPasswordChange: 40 logins with the old
// password in flight while a reset lands. Each either finishes before the
// change, and the change ends its session, or after it, and fails; none
// leaves a session alive. (Before, a login verified a hash read before the
// change and created its session unconditionally: 33 of 40 survived.)
func TestLoginInFlightDoesNotOutliveAPasswordChange(t *testing.T) {
	s := start(t, map[string]string{"RATE_LIMIT_PER_ADDRESS": "100000/1m", "LOCKOUT_THRESHOLD": "1000"})
	u := createUser(t, s, "1001", "jason@example.com", "")
	expectStatus(t, forgot(t, s, u.LoginName), 202)
	token := tokenFrom(t, parse(t, s.WaitMail(t, 1)[0]))

	const n = 40
	logins := make([]apptest.Response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { logins[i] = login(t, s, u.LoginName, oldPassword) })
	}
	// Land the reset while the logins queue for the hashing slots.
	time.Sleep(30 * time.Millisecond)
	changed := expectStatus(t, reset(t, s, token, newPassword, newPassword), 200)
	wg.Wait()

	alive := 0
	for i, r := range logins {
		switch r.Status {
		case 200:
			if s.Do(t, "GET", "/v1/me", nil, r.Map(t)["session"].(map[string]any)["token"].(string)).Status == 200 {
				alive++
			}
		case 401:
		default:
			t.Errorf("login %d: %d %s", i, r.Status, r.Body)
		}
	}
	if alive > 0 {
		t.Fatalf("%d of %d sessions opened with the old password outlived the change", alive, n)
	}
	// The reset's own session lives, and the new password works.
	expectStatus(t, s.Do(t, "GET", "/v1/me", nil, changed["session"].(map[string]any)["token"].(string)), 200)
	expectStatus(t, login(t, s, u.LoginName, newPassword), 200)
}

// TestLoginNameOfOneAccountAndEmailOfAnotherIsAmbiguous: a tenant that gave
// one of its users the login name bob@example.com must not receive the reset
// emails of another tenant's user whose email that is.
func TestLoginNameOfOneAccountAndEmailOfAnotherIsAmbiguous(t *testing.T) {
	for _, mode := range []string{"explicit", "uniform"} {
		t.Run(mode, func(t *testing.T) {
			s := start(t, map[string]string{"DISCLOSURE": mode})
			if r := s.Admin(t, "POST", "/v1/admin/domains", map[string]string{"name": "evil.example"}); r.Status != 201 {
				t.Fatal(r.Status)
			}
			// The squatter first, while nobody has the address yet ...
			if r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{"domain": "evil.example", "extension": "1",
				"email": "attacker@evil.example", "login_name": "bob@example.com", "password": oldPassword}); r.Status != 201 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			// ... then the real owner, in another domain.
			createUser(t, s, "1001", "bob@example.com", "")
			r := forgot(t, s, "BOB@example.com")
			if mode == "explicit" {
				if m := expectStatus(t, r, 409); m["code"] != "account_ambiguous" {
					t.Fatalf("answer %v", m)
				}
			} else {
				expectStatus(t, r, 202)
				waitConsumed(t, s, "tokens", 1)
			}
			time.Sleep(300 * time.Millisecond)
			if n := s.SMTP.Count(); n != 0 {
				t.Fatalf("%d emails sent for an ambiguous identifier", n)
			}
			// Logging in by login name is not ambiguous.
			expectStatus(t, login(t, s, "bob@example.com", oldPassword), 200)
		})
	}
}
