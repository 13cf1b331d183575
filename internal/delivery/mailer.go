package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/audit"
	"github.com/latchkey/latchkey/internal/coalesce"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/mailer"
	"github.com/latchkey/latchkey/internal/mailtmpl"
	"github.com/latchkey/latchkey/internal/outbox"
	"github.com/latchkey/latchkey/internal/store"
)

// Sender sends one message; *mailer.Sender in production.
type Sender interface {
	Send(ctx context.Context, m mailer.Message) error
}

// MailerConfig configures the mailer worker.
type MailerConfig struct {
	PublicBaseURL *url.URL
	FromName      string
	FromAddress   string
	// MaxAttempts is the consumer's MaxDeliver: the attempt that reaches it
	// marks the delivery failed.
	MaxAttempts int
	// Concurrency is how many emails this mailer sends at once, across all
	// its batches: the SMTP pool's size, so that a send never queues inside
	// the sender after its claim lease was checked.
	Concurrency int
	// ClaimLease is how long a claimed delivery belongs to the worker that
	// claimed it. A redelivered event finding it younger waits; older, its
	// worker is taken to have died and the delivery is claimed again. The
	// worker renews the lease of the deliveries its batch still holds before
	// a send that starts in the second half of it, and starts a send only
	// with at least SendTimeout of lease left. At least 4 × SendTimeout.
	ClaimLease time.Duration
	// SendTimeout is the longest one Send can take once it has a connection
	// (the sender's timeout and grace). Default 16s.
	SendTimeout time.Duration
}

// Lease is the claim lease the mailer settles on: ClaimLease, at least 4 ×
// SendTimeout. A delivery left "sending" that long after its claim's last
// renewal is no longer on the wire, whatever its worker does.
func (c MailerConfig) Lease() time.Duration {
	c.fill()
	return c.ClaimLease
}

func (c *MailerConfig) fill() {
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 16 * time.Second
	}
	c.ClaimLease = max(c.ClaimLease, 4*c.SendTimeout)
}

// Mailer is the mailer worker's handler of mail.requested.
type Mailer struct {
	cfg     MailerConfig
	store   *store.Store
	sender  Sender
	catalog *mailtmpl.Catalog
	outbox  *outbox.Outbox
	now     func() time.Time
	// sending holds one token per send in flight, across batches.
	sending chan struct{}
	// recorder writes outcomes as their sends end, those that end together
	// in one statement.
	recorder *coalesce.Batcher[*outcome, bool]
}

// NewMailer builds the handler. Outcome events (mail.delivered,
// mail.failed) are queued in ob's table with the outcome and handed to ob's
// relay, which must run in the same process (app.RunWorkers starts it).
func NewMailer(cfg MailerConfig, st *store.Store, sender Sender, catalog *mailtmpl.Catalog, ob *outbox.Outbox, now func() time.Time) *Mailer {
	cfg.fill()
	m := &Mailer{cfg: cfg, store: st, sender: sender, catalog: catalog, outbox: ob, now: now,
		sending: make(chan struct{}, cfg.Concurrency)}
	// A record retries for up to the claim lease (persist); the batcher's
	// bound is only a backstop above it.
	m.recorder = coalesce.New(maxRecordBatch, cfg.ClaimLease+time.Minute, m.recordBatch)
	return m
}

// maxRecordBatch bounds the outcomes one statement records.
const maxRecordBatch = 256

// MailOutcome is the data of mail.delivered and mail.failed.
type MailOutcome struct {
	DeliveryID uuid.UUID  `json:"delivery_id"`
	UserID     *uuid.UUID `json:"user_id,omitempty"`
	Template   string     `json:"template"`
	Attempts   int        `json:"attempts"`
	Error      string     `json:"error,omitempty"`
}

// Handle sends a batch of deliveries. The delivery rows are the
// idempotency record: a delivery already sent or failed is not sent again,
// however often its event is redelivered, and one being sent is left to the
// worker sending it. A delivery named twice in the batch is claimed and
// sent once; the second copy is done with it. The links' tokens are minted
// here, at send time, in the one transaction that claims the batch: a token
// exists in clear only in this process's memory and in its email, and a
// retry mints a fresh one (which revokes the unsent one). The emails then go
// out concurrently, as many at once as the SMTP pool has connections, each
// under a claim lease that covers it (see MailerConfig.ClaimLease), and each
// outcome is recorded as soon as its send ends (outcomes that end together
// in one statement), so that a worker killed mid-batch leaves unrecorded
// only the sends that had just ended. A send not started when ctx ends is
// not started: its delivery is queued again.
func (m *Mailer) Handle(ctx context.Context, items []events.Item) []error {
	errs := make([]error, len(items))
	deliveryIDs := make([]uuid.UUID, len(items)) // per item; uuid.Nil for none
	seen := make(map[uuid.UUID]bool, len(items))
	ids := make([]uuid.UUID, 0, len(items))
	for i, it := range items {
		var req MailRequested
		if err := it.Event.DecodeData(&req); err != nil {
			errs[i] = err
			continue
		}
		if req.DeliveryID == uuid.Nil {
			errs[i] = events.Permanent(errors.New("mail.requested without delivery_id"))
			continue
		}
		if seen[req.DeliveryID] {
			// Another copy of this request is in the batch (a re-publish
			// after the de-duplication window, or a redelivered message):
			// that one carries the delivery and its outcome.
			zerolog.Ctx(ctx).Debug().Str("delivery_id", req.DeliveryID.String()).Str("event_id", it.Event.ID).
				Msg("delivery requested twice in one batch; handled once")
			continue
		}
		seen[req.DeliveryID] = true
		deliveryIDs[i] = req.DeliveryID
		ids = append(ids, req.DeliveryID)
	}
	claimedAt := m.now()
	claims, err := m.claim(ctx, ids, claimedAt)
	lease := newLease(claimedAt.Add(m.cfg.ClaimLease), claims)
	stopKeeping := m.keep(ctx, lease)
	var wg sync.WaitGroup
	settle := func(o *outcome) {
		if o != nil {
			wg.Go(func() { m.settle(ctx, lease, o) })
		}
	}
	for i, it := range items {
		id := deliveryIDs[i]
		if errs[i] != nil || id == uuid.Nil {
			continue
		}
		if err != nil {
			errs[i] = err
			continue
		}
		c, ok := claims[id]
		switch {
		case !ok:
			wg.Go(func() { errs[i] = m.notClaimed(ctx, id) })
			continue
		case c.Gone:
			zerolog.Ctx(ctx).Info().Str("delivery_id", id.String()).Str("reason", c.Delivery.LastError).Msg("delivery skipped")
			continue
		case c.skip != "":
			settle(m.skipped(ctx, c))
			continue
		}
		// Sends start in batch order, each once it has an SMTP connection
		// of its own; none starts once ctx has ended.
		acquired := false
		if ctx.Err() == nil {
			select {
			case m.sending <- struct{}{}:
				acquired = true
			case <-ctx.Done():
			}
		}
		if !acquired || ctx.Err() != nil {
			if acquired {
				<-m.sending
			}
			var o *outcome
			o, errs[i] = notSent(c, context.Cause(ctx))
			settle(o)
			continue
		}
		wg.Go(func() {
			o, err := m.deliver(ctx, it.Attempt, c, lease)
			<-m.sending
			errs[i] = err
			if o != nil {
				m.settle(ctx, lease, o)
			}
		})
	}
	wg.Wait()
	stopKeeping()
	return errs
}

// settle records one outcome (with whatever other outcomes end at the same
// time) and releases its delivery from the batch's lease. The record is not
// given up when ctx ends: after an SMTP 250 it is what stops a later request
// from sending the email again.
func (m *Mailer) settle(ctx context.Context, l *lease, o *outcome) {
	l.mu.Lock()
	l.recording[o.ID] = true
	l.mu.Unlock()
	_, _ = m.recorder.Do(context.WithoutCancel(ctx), o)
	l.mu.Lock()
	delete(l.held, o.ID)
	delete(l.recording, o.ID)
	l.mu.Unlock()
}

// outcome is what one attempt did, recorded as soon as it is known.
type outcome struct {
	store.Outcome
	delivery store.Delivery
	event    string // mail.delivered or mail.failed; "" for none
}

// recordBatch writes outcomes, their audit and outcome events in one
// statement, revokes the links of failed deliveries and hands the outcome
// events to the outbox relay; it reports per outcome whether it was
// recorded (false: the claim was taken over, or the write failed for the
// whole claim lease, which it logs). After SMTP 250s, recording them is
// what stops a later request for the same delivery from sending it again,
// so the write is retried for the whole claim lease. Outcome events never
// hold up sending: they are in the outbox with the outcome, and published
// by the relay, now or once the stream acknowledges again.
func (m *Mailer) recordBatch(ctx context.Context, outcomes []*outcome) ([]bool, error) {
	log := zerolog.Ctx(ctx)
	done := make([]bool, len(outcomes))
	var rows []store.Outcome
	evs := map[uuid.UUID]events.Event{}
	for _, o := range outcomes {
		if o == nil {
			continue
		}
		if o.event != "" {
			d := o.delivery
			e, err := events.New(Source, o.event, d.ID.String(),
				MailOutcome{DeliveryID: d.ID, UserID: d.UserID, Template: d.Template, Attempts: d.Attempts, Error: o.LastError}, m.now())
			if err == nil {
				e.ID = o.event + ":" + d.ID.String()
				var row store.OutboxEvent
				if row, err = outbox.Encode(e); err == nil {
					o.Event = &row
					evs[d.ID] = e
				}
			}
			if err != nil {
				log.Error().Err(err).Str("delivery_id", d.ID.String()).Msg("mail outcome event not queued")
			}
		}
		rows = append(rows, o.Outcome)
	}
	var recorded map[uuid.UUID]bool
	err := m.persist(ctx, func(ctx context.Context) error {
		var err error
		recorded, err = m.store.FinishDeliveries(ctx, rows, m.now())
		return err
	})
	if err != nil {
		log.Error().Err(err).Int("deliveries", len(rows)).
			Msg("outcomes not recorded for the whole claim lease; a later request for a sent delivery may send it again")
		return done, nil
	}
	for i, o := range outcomes {
		done[i] = o != nil && recorded[o.ID]
	}
	var failed []uuid.UUID
	var owners []uuid.UUID
	var publish []events.Event
	for _, o := range outcomes {
		if o == nil || !recorded[o.ID] {
			continue
		}
		if o.Status == "failed" {
			failed = append(failed, o.ID)
			if o.delivery.UserID != nil {
				owners = append(owners, *o.delivery.UserID)
			}
		}
		if e, ok := evs[o.ID]; ok {
			publish = append(publish, e)
		}
	}
	if len(failed) > 0 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := m.store.InTx(rctx, func(tx pgx.Tx) error {
			// Users first, then their tokens: the one lock order.
			if _, err := m.store.LockUsersWithDomain(rctx, tx, owners); err != nil {
				return err
			}
			return m.store.RevokeTokensOfDeliveries(rctx, tx, failed, m.now())
		})
		cancel()
		if err != nil {
			log.Warn().Err(err).Msg("revoke links of failed deliveries")
		}
	}
	m.outbox.Dispatch(publish...)
	return done, nil
}

// claim claims the deliveries and mints their links' tokens in one
// transaction.
func (m *Mailer) claim(ctx context.Context, ids []uuid.UUID, now time.Time) (map[uuid.UUID]claim, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out map[uuid.UUID]claim
	err := m.store.InTx(ctx, func(tx pgx.Tx) error {
		out = map[uuid.UUID]claim{} // afresh if the transaction is run again
		claimed, err := m.store.ClaimDeliveries(ctx, tx, ids, now, now.Add(-m.cfg.ClaimLease))
		if err != nil {
			return err
		}
		var grants []store.TokenGrant
		for id, c := range claimed {
			cl := claim{Claimed: c}
			d := c.Delivery
			switch {
			case c.Gone:
			case c.Superseded:
				cl.skip = "a newer email of the same kind was requested"
			case c.User.Status != "active":
				cl.skip = "the account is disabled"
			case d.Recipient != c.User.Email:
				// Recorded before an admin changed the address: the change
				// revoked the links this request was for, and the old
				// address may no longer be the user's.
				cl.skip = "the account's email address changed after this email was requested"
			case d.TokenPurpose != nil:
				var hash [32]byte
				if cl.token, hash, err = credential.NewToken(); err != nil {
					return err
				}
				grants = append(grants, store.TokenGrant{
					UserID: c.User.ID, Purpose: *d.TokenPurpose, Hash: hash[:], ExpiresAt: now.Add(d.TokenTTL), DeliveryID: d.ID,
				})
			}
			out[id] = cl
		}
		return m.store.IssueTokens(ctx, tx, grants, now)
	})
	return out, err
}

// claim is one claim for the batch.
type claim struct {
	store.Claimed
	token string
	skip  string
}

// lease is the claim lease of a batch's deliveries: until when, by the
// mailer's clock, they are this worker's, and which of them still are.
type lease struct {
	mu        sync.Mutex
	until     time.Time
	held      map[uuid.UUID]int  // delivery → the attempt that claimed it
	recording map[uuid.UUID]bool // held deliveries whose outcome is being recorded
}

func newLease(until time.Time, claims map[uuid.UUID]claim) *lease {
	l := &lease{until: until, held: map[uuid.UUID]int{}, recording: map[uuid.UUID]bool{}}
	for id, c := range claims {
		if !c.Gone {
			l.held[id] = c.Delivery.Attempts
		}
	}
	return l
}

// renew moves the lease on for every delivery the batch still holds (not
// yet sent, or sent and being recorded), in one
// statement; one that another worker has claimed meanwhile is no longer
// held. The caller holds l.mu.
func (m *Mailer) renew(ctx context.Context, l *lease) error {
	if len(l.held) == 0 {
		return nil
	}
	claims := make([]store.Claim, 0, len(l.held))
	for d, attempt := range l.held {
		claims = append(claims, store.Claim{ID: d, Attempt: attempt})
	}
	now := m.now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	renewed, err := m.store.RenewClaims(rctx, claims, now)
	if err != nil {
		return err
	}
	for d := range l.held {
		if !renewed[d] {
			if !l.recording[d] { // a recorded one is no longer claimed
				zerolog.Ctx(ctx).Warn().Str("delivery_id", d.String()).Msg("claim taken over by another worker")
			}
			delete(l.held, d)
		}
	}
	l.until = now.Add(m.cfg.ClaimLease)
	return nil
}

// keep renews the batch's lease every quarter of ClaimLease until the
// returned function is called: while the batch's sends wait for
// connections, and while an outcome's record is retried through a database
// outage, its deliveries stay its own.
func (m *Mailer) keep(ctx context.Context, l *lease) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(m.cfg.ClaimLease / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			l.mu.Lock()
			if err := m.renew(ctx, l); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("renew claim lease")
			}
			l.mu.Unlock()
		}
	}()
	return func() { close(done); <-stopped }
}

// cover reports whether the delivery is still this worker's with at least
// SendTimeout of lease left, so that the send it is about to start ends
// before anyone else may claim it. In the lease's second half it renews
// first.
func (m *Mailer) cover(ctx context.Context, l *lease, id uuid.UUID) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[id]; !ok {
		return false, nil
	}
	if l.until.Sub(m.now()) < m.cfg.ClaimLease/2 {
		if err := m.renew(ctx, l); err != nil && l.until.Sub(m.now()) < m.cfg.SendTimeout {
			return false, err
		}
	}
	_, ok := l.held[id]
	return ok && l.until.Sub(m.now()) >= m.cfg.SendTimeout, nil
}

// skipped is the outcome of a claimed delivery not to send.
func (m *Mailer) skipped(ctx context.Context, c claim) *outcome {
	d := c.Delivery
	zerolog.Ctx(ctx).Info().Str("delivery_id", d.ID.String()).Str("reason", c.skip).Msg("delivery skipped")
	return &outcome{Outcome: store.Outcome{ID: d.ID, Attempt: d.Attempts, Status: "skipped", LastError: c.skip}, delivery: d}
}

// notSent is the outcome of a claimed delivery whose send did not start:
// queued again, for a later attempt.
func notSent(c claim, cause error) (*outcome, error) {
	d := c.Delivery
	return &outcome{Outcome: store.Outcome{ID: d.ID, Attempt: d.Attempts, Status: "queued", LastError: cause.Error()}, delivery: d},
		fmt.Errorf("delivery %s not sent: %w", d.ID, cause)
}

// deliver sends one claimed delivery, holding an SMTP connection slot, and
// says what to record (nil: nothing, the delivery is no longer this
// worker's).
func (m *Mailer) deliver(ctx context.Context, attempt int, c claim, l *lease) (*outcome, error) {
	d, u := c.Delivery, c.User
	o := &outcome{Outcome: store.Outcome{ID: d.ID, Attempt: d.Attempts}, delivery: d}
	log := zerolog.Ctx(ctx).With().Str("delivery_id", d.ID.String()).Int("attempt", attempt).Logger()
	failed := func(cause error) (*outcome, error) {
		o.Status, o.LastError, o.AuditKind, o.DomainID, o.event = "failed", cause.Error(), audit.MailFailed, &u.DomainID, events.TypeMailFailed
		return o, cause
	}
	msg, err := m.compose(d, u, c.token)
	if err != nil {
		return failed(events.Permanent(err))
	}
	ok, err := m.cover(ctx, l, d.ID)
	if err != nil {
		return notSent(c, fmt.Errorf("renew the claim lease: %w", err))
	}
	if !ok {
		log.Warn().Msg("claim taken over by another worker before the send; not sending")
		return nil, m.notClaimed(ctx, d.ID)
	}
	// The send is not cut short by the handler's deadline: interrupted after
	// the data went out, it would be retried and arrive twice. The sender's
	// own timeout bounds it, and the lease covers that.
	sendErr := m.sender.Send(context.WithoutCancel(ctx), msg)
	if sendErr == nil {
		log.Info().Str("template", d.Template).Msg("mail sent")
		o.Status, o.MessageID, o.AuditKind, o.DomainID, o.event = "sent", msg.MessageID, audit.MailSent, &u.DomainID, events.TypeMailDelivered
		return o, nil
	}
	final := d.Attempts >= m.cfg.MaxAttempts || attempt >= m.cfg.MaxAttempts
	if mailer.Temporary(sendErr) && !final {
		// Queued again; until recorded, the delivery stays claimed and a
		// retry waits for the lease instead of racing.
		o.Status, o.LastError = "queued", sendErr.Error()
		return o, fmt.Errorf("send delivery %s: %w", d.ID, sendErr)
	}
	return failed(events.Permanent(fmt.Errorf("send delivery %s: %w", d.ID, sendErr)))
}

// notClaimed decides what a mail.requested whose delivery could not be
// claimed means: being sent by another worker (look again after the
// lease), finished already (done; a failed one fails again, so the event
// ends as a dead letter however often it is redelivered), or unknown (never
// recorded: nothing can be sent).
func (m *Mailer) notClaimed(ctx context.Context, id uuid.UUID) error {
	d, err := m.store.Delivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return events.Permanent(fmt.Errorf("delivery %s does not exist", id))
	}
	if err != nil {
		return err
	}
	switch d.Status {
	case "sending":
		return events.RetryAfter(fmt.Errorf("delivery %s is being sent by another worker", id), m.cfg.ClaimLease)
	case "failed":
		return events.Permanent(fmt.Errorf("delivery %s failed: %s", id, d.LastError))
	}
	zerolog.Ctx(ctx).Debug().Str("delivery_id", id.String()).Str("status", d.Status).Msg("delivery already finished; not sending")
	return nil
}

// persist runs write, retrying through cancellation and database outages
// for as long as the claim lease lasts: after an SMTP 250, recording it is
// what stops a later request for the same delivery from sending it again.
func (m *Mailer) persist(ctx context.Context, write func(context.Context) error) error {
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(m.cfg.ClaimLease)
	wait := 100 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := write(attemptCtx)
		cancel()
		if err == nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
}

func (m *Mailer) compose(d store.Delivery, u store.User, token string) (mailer.Message, error) {
	tmpl, _, err := m.catalog.Lookup(d.Template, d.Locale)
	if err != nil {
		return mailer.Message{}, err
	}
	firstName := u.FirstName
	if firstName == "" {
		firstName = u.LoginName
	}
	vars := mailtmpl.Vars{
		FirstName: firstName, LastName: u.LastName, Username: u.LoginName, Email: u.Email,
		Domain: u.DomainName, Extension: u.Extension, ExpiresMinutes: int(d.TokenTTL / time.Minute),
	}
	if token != "" {
		vars.Link = m.link(*d.TokenPurpose, token)
	}
	r, err := mailtmpl.Render(d.Template, tmpl, vars)
	if err != nil {
		return mailer.Message{}, err
	}
	toName := u.FirstName
	if u.LastName != "" {
		toName += " " + u.LastName
	}
	return mailer.Message{
		FromName: m.cfg.FromName, FromAddress: m.cfg.FromAddress,
		ToName: toName, ToAddress: d.Recipient,
		Subject: r.Subject, Text: r.Text, HTML: r.HTML,
		// Stable per delivery: a receiver can recognise a resend.
		MessageID: "<" + d.ID.String() + "@latchkey>",
		Headers:   map[string]string{"X-Latchkey-Delivery": d.ID.String(), "Auto-Submitted": "auto-generated"},
	}, nil
}

// link builds a URL from PUBLIC_BASE_URL only, never from a request.
func (m *Mailer) link(purpose, token string) string {
	u := *m.cfg.PublicBaseURL
	q := url.Values{}
	switch purpose {
	case "welcome":
		u.Path += "/setup"
		q.Set("code", token)
	case "legacy_confirm":
		u.Path += "/kxuseradmin"
		q.Set("operation", "confirm")
		q.Set("data", token)
	default:
		u.Path += "/reset"
		q.Set("token", token)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Notifier is the notifier worker's handler of password.changed: it tells
// the user, never including the password.
type Notifier struct {
	store     *store.Store
	requester *Requester
}

// NewNotifier builds the handler.
func NewNotifier(st *store.Store, req *Requester) *Notifier {
	return &Notifier{store: st, requester: req}
}

// Handle records one password_changed delivery per event and requests it.
func (n *Notifier) Handle(ctx context.Context, e events.Event) error {
	var data struct {
		UserID uuid.UUID `json:"user_id"`
	}
	if err := e.DecodeData(&data); err != nil {
		return err
	}
	if data.UserID == uuid.Nil {
		return events.Permanent(errors.New("password.changed without user_id"))
	}
	u, err := n.store.UserWithDomain(ctx, nil, data.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the account is gone: nobody to tell
	}
	if err != nil {
		return err
	}
	d, _, err := n.requester.Record(ctx, nil, store.NewDelivery{
		IdempotencyKey: "password_changed:" + e.ID, UserID: u.ID, Template: mailtmpl.PasswordChanged,
		Locale: u.Locale, Recipient: u.Email, SourceEventID: e.ID,
	})
	if err != nil {
		return err
	}
	return n.requester.Publish(ctx, d)
}
