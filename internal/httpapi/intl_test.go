package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
)

// intlStack runs the ingress, the tokens worker and the mailer, whose SMTP
// server (smtptest's default) does not offer SMTPUTF8.
func intlStack(t *testing.T) *apptest.Stack {
	t.Helper()
	s := apptest.Start(t, apptest.Options{Roles: []app.Role{app.RoleTokens, app.RoleMailer}})
	createDomain(t, s, "acme.11111.service")
	return s
}

func createUserWithEmail(t *testing.T, s *apptest.Stack, ext, email string) string {
	t.Helper()
	r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": ext, "email": email, "first_name": "Anna",
	})
	if r.Status != http.StatusCreated {
		t.Fatalf("create user with %s: %d %s", email, r.Status, r.Body)
	}
	return r.Map(t)["id"].(string)
}

// settledDelivery waits until the user's one delivery is sent or failed.
func settledDelivery(t *testing.T, s *apptest.Stack, userID string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var d struct{ Items []map[string]any }
		s.Admin(t, "GET", "/v1/admin/deliveries?user_id="+userID, nil).JSON(t, &d)
		if len(d.Items) == 1 && (d.Items[0]["status"] == "sent" || d.Items[0]["status"] == "failed") {
			return d.Items[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery never settled: %v\nlogs:\n%s", d.Items, s.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deadLetters(t *testing.T, s *apptest.Stack) []map[string]any {
	t.Helper()
	var dead struct{ Items []map[string]any }
	s.Admin(t, "GET", "/v1/admin/dead-letters", nil).JSON(t, &dead)
	return dead.Items
}

// Issue 10, fault 8: an address with an international domain reaches a
// relay without SMTPUTF8 under its A-label, once, instead of being refused
// (553) into a dead letter.
func TestInternationalDomainReachesARelayWithoutSMTPUTF8(t *testing.T) {
	s := intlStack(t)
	id := createUserWithEmail(t, s, "1001", "anna@bücher.example")
	if r := s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": "anna@bücher.example"}, ""); r.Status != http.StatusAccepted {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
	d := settledDelivery(t, s, id)
	if d["status"] != "sent" || d["attempts"] != float64(1) {
		t.Fatalf("delivery = %v\nlogs:\n%s", d, s.Logs.String())
	}
	msgs := s.SMTP.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "anna@xn--bcher-kva.example" {
		t.Fatalf("the relay received %d messages, envelope %+v; want one to anna@xn--bcher-kva.example", len(msgs), msgs)
	}
	if st := s.SMTP.Stats(); st.RcptRejected != 0 || st.MailRejected != 0 || st.Rejected != 0 {
		t.Errorf("the relay refused something: %+v", st)
	}
	if dead := deadLetters(t, s); len(dead) != 0 {
		t.Errorf("dead letters: %v", dead)
	}
}

// A mailbox whose local part is not ASCII is accepted at creation (a relay
// with SMTPUTF8 can deliver to it), but through a relay without SMTPUTF8
// its delivery fails at once, with a reason that says so, and nothing is
// sent or retried.
func TestNonASCIILocalPartFailsItsDeliveryClearly(t *testing.T) {
	s := intlStack(t)
	id := createUserWithEmail(t, s, "1001", "用户@例子.广告")
	if r := s.Do(t, "POST", "/v1/password/forgot", map[string]string{"identifier": "用户@例子.广告"}, ""); r.Status != http.StatusAccepted {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
	d := settledDelivery(t, s, id)
	reason, _ := d["last_error"].(string)
	if d["status"] != "failed" || d["attempts"] != float64(1) || !strings.Contains(reason, "SMTPUTF8") {
		t.Fatalf("delivery = %v", d)
	}
	if st := s.SMTP.Stats(); st.Accepted != 0 || st.MailRejected != 0 || st.RcptRejected != 0 {
		t.Errorf("something reached the relay: %+v", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		dead := deadLetters(t, s)
		if len(dead) == 1 && strings.Contains(dead[0]["reason"].(string), "SMTPUTF8") {
			break
		}
		if len(dead) > 1 || time.Now().After(deadline) {
			t.Fatalf("dead letters = %v, want one saying SMTPUTF8", dead)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An address whose international domain has no A-label could never be
// routed, so it is refused where it is typed.
func TestEmailWithoutALabelIsRefusedAtCreation(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	createDomain(t, s, "acme.11111.service")
	r := s.Admin(t, "POST", "/v1/admin/users", map[string]any{
		"domain": "acme.11111.service", "extension": "1001", "email": "anna@-bücher.example",
	})
	m := expectProblem(t, r, http.StatusUnprocessableEntity, "validation_failed")
	if fieldCodes(m)["email"] == "" {
		t.Fatalf("no field error for email: %v", m)
	}
	var n int
	if err := s.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d users stored (%v)", n, err)
	}
}
