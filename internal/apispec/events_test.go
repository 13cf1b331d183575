package apispec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/latchkey/latchkey/internal/apispec"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/smtptest"
)

// eventSchemas compiles the event schemas with santhosh-tekuri/jsonschema
// (formats asserted: a uuid or date-time that is not one fails) and returns
// them by event type.
func eventSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files := apispec.EventSchemas()
	names, err := fs.Glob(files, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no event schemas (%v)", err)
	}
	for _, name := range names {
		raw, err := fs.ReadFile(files, name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := apispec.EventSchemaBase + name
		if id, _ := doc.(map[string]any)["$id"].(string); id != want {
			t.Fatalf("%s: $id %q, want %q", name, id, want)
		}
		if err := c.AddResource(want, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	schemas := map[string]*jsonschema.Schema{}
	for _, name := range names {
		sch, err := c.Compile(apispec.EventSchemaBase + name)
		if err != nil {
			t.Fatalf("%s does not compile: %v", name, err)
		}
		if name != "cloudevent.json" {
			schemas[strings.TrimSuffix(name, ".json")] = sch
		}
	}
	return schemas
}

// TestEventSchemasHoldTheirType checks each type's schema without a
// running service: it compiles, builds on the envelope, and describes the
// type its file is named after.
func TestEventSchemasHoldTheirType(t *testing.T) {
	for typ := range eventSchemas(t) {
		raw, err := fs.ReadFile(apispec.EventSchemas(), typ+".json")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Ref        string `json:"$ref"`
			Properties struct {
				Type struct {
					Const string `json:"const"`
				} `json:"type"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Ref != "cloudevent.json" || doc.Properties.Type.Const != typ {
			t.Errorf("%s.json: $ref %q and type %q, want cloudevent.json and %s", typ, doc.Ref, doc.Properties.Type.Const, typ)
		}
	}
}

// TestPublishedEventsMatchTheirSchemas runs the real workers (tokens,
// mailer, notifier) end to end: a self-service reset in uniform disclosure
// mode (reset.requested with an identifier), the reset itself
// (password.changed, then the notifier's email), and an admin reset whose
// email the SMTP server refuses for good (reset.requested with a user id,
// mail.failed). It then reads every event on the stream and validates each
// against its type's schema; a type published without a schema in
// internal/apispec/events fails. The NATS message must agree with the
// envelope: subject latchkey.<type>, Nats-Msg-Id the event id.
func TestPublishedEventsMatchTheirSchemas(t *testing.T) {
	schemas := eventSchemas(t)
	s := apptest.Start(t, apptest.Options{
		Roles: []app.Role{app.RoleTokens, app.RoleMailer, app.RoleNotifier},
		Env:   map[string]string{"DISCLOSURE": "uniform"},
	})
	c := client{t: t, s: s}
	const domain = "acme.11111.service"
	expect(t, c.admin("POST", "/v1/admin/domains", map[string]string{"name": domain}), 201, "")
	u := expect(t, c.admin("POST", "/v1/admin/users", map[string]any{
		"domain": domain, "extension": "1001", "email": "jason@example.com", "password": "original passphrase 42",
	}), 201, "")

	expect(t, c.do("POST", "/v1/password/forgot", map[string]string{"identifier": u["login_name"].(string)}, nil), 202, "")
	token := newestToken(t, s, 1)
	pw := "brand new passphrase 43"
	expect(t, c.do("POST", "/v1/password/reset", map[string]string{"token": token, "new_password": pw, "confirm_password": pw}, nil), 200, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.SMTP.WaitForCount(ctx, 2); err != nil {
		t.Fatalf("the password-changed email: %v\nlogs:\n%s", err, s.Logs.String())
	}
	s.SMTP.FailNext(1, smtptest.Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "mailbox unavailable"})
	expect(t, c.admin("POST", "/v1/admin/users/"+u["id"].(string)+"/password-reset", nil), 202, "")

	// What the flows above publish, at least.
	want := map[string]int{
		events.TypeResetRequested: 2, events.TypeMailRequested: 3, events.TypeMailDelivered: 2,
		events.TypeMailFailed: 1, events.TypePasswordChanged: 1,
	}
	readCtx, cancelRead := context.WithTimeout(context.Background(), time.Minute)
	defer cancelRead()
	msgs := readStream(readCtx, t, s, want)
	seen := map[string]int{}
	var resetVariants []string
	for _, m := range msgs {
		var e map[string]any
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Errorf("seq %d on %s is not JSON: %v", m.Sequence, m.Subject, err)
			continue
		}
		typ, _ := e["type"].(string)
		seen[typ]++
		if m.Subject != events.SubjectPrefix+typ {
			t.Errorf("seq %d: type %q on subject %q", m.Sequence, typ, m.Subject)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != e["id"] {
			t.Errorf("seq %d (%s): Nats-Msg-Id %q, event id %v", m.Sequence, typ, id, e["id"])
		}
		if ct := m.Header.Get("Content-Type"); ct != events.ContentType {
			t.Errorf("seq %d (%s): Content-Type %q, want %s", m.Sequence, typ, ct, events.ContentType)
		}
		sch, ok := schemas[typ]
		if !ok {
			t.Errorf("event type %q is published (seq %d) but internal/apispec/events has no %s.json:\n%s", typ, m.Sequence, typ, m.Data)
			continue
		}
		if err := sch.Validate(e); err != nil {
			t.Errorf("seq %d (%s) does not match %s.json:\n%v\n%s", m.Sequence, typ, typ, err, m.Data)
		}
		if typ == events.TypeResetRequested {
			data, _ := e["data"].(map[string]any)
			resetVariants = append(resetVariants, strings.Join(slices.Sorted(maps.Keys(data)), ","))
		}
	}
	t.Logf("events checked: %v; reset.requested data: %v", seen, resetVariants)
	for typ, n := range want {
		if seen[typ] < n {
			t.Errorf("%d %s events on the stream, want at least %d", seen[typ], typ, n)
		}
	}
	if !slices.ContainsFunc(resetVariants, func(v string) bool { return strings.Contains(v, "identifier") }) ||
		!slices.ContainsFunc(resetVariants, func(v string) bool { return strings.Contains(v, "user_id") }) {
		t.Errorf("reset.requested variants seen %v, want one with identifier and one with user_id", resetVariants)
	}
}

// readStream reads the event stream from its start until it holds at
// least want events of each type (or ctx ends), and returns them all.
func readStream(ctx context.Context, t *testing.T, s *apptest.Stack, want map[string]int) []*jetstream.RawStreamMsg {
	t.Helper()
	_, js := s.NATS.Connect(t)
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	count := map[string]int{}
	next := uint64(1)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v (have %v)", err, count)
		}
		for ; next <= info.State.LastSeq; next++ {
			m, err := stream.GetMsg(ctx, next)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("get seq %d: %v", next, err)
			}
			msgs = append(msgs, m)
			count[strings.TrimPrefix(m.Subject, events.SubjectPrefix)]++
		}
		done := true
		for typ, n := range want {
			done = done && count[typ] >= n
		}
		if done {
			return msgs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the stream holds %v, want at least %v\nlogs:\n%s", count, want, s.Logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
