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
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/mailer"
	"github.com/latchkey/latchkey/internal/mailtmpl"
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
	// Concurrency is how many emails of a batch are sent at once: the SMTP
	// pool's size.
	Concurrency int
	// ClaimLease is how long a claimed delivery belongs to the worker that
	// claimed it. A redelivered event finding it younger waits; older, its
	// worker is taken to have died and the delivery is claimed again. Keep
	// it above the consumer's ack wait plus the SMTP timeout.
	ClaimLease time.Duration
}

// Mailer is the mailer worker's handler of mail.requested.
type Mailer struct {
	cfg       MailerConfig
	store     *store.Store
	sender    Sender
	catalog   *mailtmpl.Catalog
	publisher *events.Publisher
	now       func() time.Time
}

// NewMailer builds the handler.
func NewMailer(cfg MailerConfig, st *store.Store, sender Sender, catalog *mailtmpl.Catalog, pub *events.Publisher, now func() time.Time) *Mailer {
	return &Mailer{cfg: cfg, store: st, sender: sender, catalog: catalog, publisher: pub, now: now}
}

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
// worker sending it. The links' tokens are minted here, at send time, in the
// one transaction that claims the batch: a token exists in clear only in
// this process's memory and in its email, and a retry mints a fresh one
// (which revokes the unsent one). The emails then go out concurrently, as
// many at once as the SMTP pool has connections.
func (m *Mailer) Handle(ctx context.Context, items []events.Item) []error {
	errs := make([]error, len(items))
	deliveryIDs := make([]uuid.UUID, len(items)) // per item
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
		deliveryIDs[i] = req.DeliveryID
		ids = append(ids, req.DeliveryID)
	}
	claims, err := m.claim(ctx, ids)
	slots := make(chan struct{}, max(1, m.cfg.Concurrency))
	outcomes := make([]*outcome, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		if errs[i] != nil {
			continue
		}
		if err != nil {
			errs[i] = err
			continue
		}
		id := deliveryIDs[i]
		c, ok := claims[id]
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if !ok {
				errs[i] = m.notClaimed(ctx, id)
				return
			}
			outcomes[i], errs[i] = m.deliver(ctx, it.Attempt, c)
		}()
	}
	wg.Wait()
	m.record(ctx, outcomes)
	return errs
}

// outcome is what one attempt did, recorded with the rest of its batch.
type outcome struct {
	store.Outcome
	delivery store.Delivery
	event    string // mail.delivered or mail.failed; "" for none
}

// record writes a batch's outcomes in one statement, revokes the links of
// failed deliveries and publishes the outcome events. After SMTP 250s,
// recording them is what stops a later request for the same delivery from
// sending it again, so the write is retried for the whole claim lease.
func (m *Mailer) record(ctx context.Context, outcomes []*outcome) {
	var rows []store.Outcome
	var failed []uuid.UUID
	var evs []events.Event
	for _, o := range outcomes {
		if o == nil {
			continue
		}
		rows = append(rows, o.Outcome)
		if o.Status == "failed" {
			failed = append(failed, o.ID)
		}
		if o.event != "" {
			d := o.delivery
			e, err := events.New(Source, o.event, d.ID.String(),
				MailOutcome{DeliveryID: d.ID, UserID: d.UserID, Template: d.Template, Attempts: d.Attempts, Error: o.LastError}, m.now())
			if err == nil {
				e.ID = o.event + ":" + d.ID.String()
				evs = append(evs, e)
			}
		}
	}
	log := zerolog.Ctx(ctx)
	if err := m.persist(ctx, func(ctx context.Context) error { return m.store.FinishDeliveries(ctx, rows, m.now()) }); err != nil {
		log.Error().Err(err).Int("deliveries", len(rows)).
			Msg("outcomes not recorded for the whole claim lease; a later request for a sent delivery may send it again")
		return
	}
	if err := m.store.RevokeTokensOfDeliveries(context.WithoutCancel(ctx), failed, m.now()); err != nil {
		log.Warn().Err(err).Msg("revoke links of failed deliveries")
	}
	// Outcome events inform; the delivery rows are the record.
	for i, err := range m.publisher.PublishAll(context.WithoutCancel(ctx), evs) {
		if err != nil {
			log.Warn().Err(err).Str("event_id", evs[i].ID).Msg("publish mail outcome")
		}
	}
}

// claim is one claim for the batch.
type claim struct {
	store.Claimed
	token string
	skip  string
}

// claim claims the deliveries and mints their links' tokens in one
// transaction.
func (m *Mailer) claim(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]claim, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	now := m.now()
	out := map[uuid.UUID]claim{}
	err := m.store.InTx(ctx, func(tx pgx.Tx) error {
		claimed, err := m.store.ClaimDeliveries(ctx, tx, ids, now, now.Add(-m.cfg.ClaimLease))
		if err != nil {
			return err
		}
		var grants []store.TokenGrant
		for id, c := range claimed {
			cl := claim{Claimed: c}
			d := c.Delivery
			switch {
			case c.Superseded:
				cl.skip = "a newer email of the same kind was requested"
			case c.User.Status != "active":
				cl.skip = "the account is disabled"
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

// deliver sends one claimed delivery and says what to record.
func (m *Mailer) deliver(ctx context.Context, attempt int, c claim) (*outcome, error) {
	d, u := c.Delivery, c.User
	o := &outcome{Outcome: store.Outcome{ID: d.ID, Attempt: d.Attempts}, delivery: d}
	log := zerolog.Ctx(ctx).With().Str("delivery_id", d.ID.String()).Int("attempt", attempt).Logger()
	if c.skip != "" {
		log.Info().Str("reason", c.skip).Msg("delivery skipped")
		o.Status, o.LastError = "skipped", c.skip
		return o, nil
	}
	failed := func(cause error) (*outcome, error) {
		o.Status, o.LastError, o.AuditKind, o.DomainID, o.event = "failed", cause.Error(), audit.MailFailed, &u.DomainID, events.TypeMailFailed
		return o, cause
	}
	msg, err := m.compose(d, u, c.token)
	if err != nil {
		return failed(events.Permanent(err))
	}
	// The send is not cut short by the handler's deadline: interrupted after
	// the data went out, it would be retried and arrive twice. The sender's
	// own timeout bounds it.
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
// claimed means: finished already (done), being sent by another worker (look
// again after the lease), or unknown (never recorded: nothing can be sent).
func (m *Mailer) notClaimed(ctx context.Context, id uuid.UUID) error {
	d, err := m.store.Delivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return events.Permanent(fmt.Errorf("delivery %s does not exist", id))
	}
	if err != nil {
		return err
	}
	if d.Status == "sending" {
		return events.RetryAfter(fmt.Errorf("delivery %s is being sent by another worker", id), m.cfg.ClaimLease)
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
