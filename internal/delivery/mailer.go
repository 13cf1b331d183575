package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/url"
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

// Handle sends one delivery. The delivery row is the idempotency record: a
// delivery already sent or failed is not sent again, however often its
// event is redelivered. The link's token is minted here, at send time, in
// the transaction that claims the attempt: it exists in clear only in this
// process's memory and in the email, and a retry mints a fresh one (which
// revokes the unsent one).
func (m *Mailer) Handle(ctx context.Context, e events.Event) error {
	var req MailRequested
	if err := e.DecodeData(&req); err != nil {
		return err
	}
	log := zerolog.Ctx(ctx).With().Str("delivery_id", req.DeliveryID.String()).Logger()
	now := m.now()
	var d store.Delivery
	var u store.User
	var token string
	err := m.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		d, err = m.store.StartDeliveryAttempt(ctx, tx, req.DeliveryID, now)
		if err != nil {
			return err
		}
		if d.UserID == nil {
			return events.Permanent(errors.New("delivery has no user"))
		}
		u, err = m.store.UserWithDomain(ctx, tx, *d.UserID)
		if err != nil {
			return err
		}
		if d.TokenPurpose == nil {
			return nil
		}
		var hash [32]byte
		if token, hash, err = credential.NewToken(); err != nil {
			return err
		}
		_, err = m.store.IssueToken(ctx, tx, u.ID, *d.TokenPurpose, hash[:], now, now.Add(d.TokenTTL), &d.ID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		// Finished already (sent, failed) or never recorded: nothing to do.
		log.Debug().Msg("delivery already finished or unknown; not sending")
		return nil
	}
	if err != nil {
		return err
	}

	msg, err := m.compose(d, u, token)
	if err != nil {
		return m.fail(ctx, d, events.Permanent(err))
	}
	sendErr := m.sender.Send(ctx, msg)
	if sendErr == nil {
		if err := m.store.FinishDelivery(ctx, d.ID, "sent", "", msg.MessageID, m.now()); err != nil {
			// The mail left; a redelivery would find the row still "sending"
			// and send again. Retrying the update is the lesser evil.
			return err
		}
		meta := audit.Meta{ActorKind: audit.ActorSystem}
		if err := audit.Record(ctx, m.store, nil, audit.MailSent, d.UserID, &u.DomainID, meta,
			map[string]any{"delivery_id": d.ID, "template": d.Template, "attempts": d.Attempts}); err != nil {
			log.Warn().Err(err).Msg("audit mail sent")
		}
		m.publishOutcome(ctx, events.TypeMailDelivered, d, "")
		log.Info().Str("template", d.Template).Int("attempt", d.Attempts).Msg("mail sent")
		return nil
	}
	if mailer.Temporary(sendErr) && d.Attempts < m.cfg.MaxAttempts {
		if err := m.store.FinishDelivery(ctx, d.ID, "queued", sendErr.Error(), "", m.now()); err != nil {
			log.Warn().Err(err).Msg("record failed attempt")
		}
		return fmt.Errorf("send delivery %s: %w", d.ID, sendErr)
	}
	return m.fail(ctx, d, events.Permanent(fmt.Errorf("send delivery %s: %w", d.ID, sendErr)))
}

// fail records a delivery that will not be sent and kills its link.
func (m *Mailer) fail(ctx context.Context, d store.Delivery, cause error) error {
	now := m.now()
	if err := m.store.FinishDelivery(ctx, d.ID, "failed", cause.Error(), "", now); err != nil {
		return err
	}
	if err := m.store.RevokeDeliveryToken(ctx, d.ID, now); err != nil {
		return err
	}
	if err := audit.Record(ctx, m.store, nil, audit.MailFailed, d.UserID, nil, audit.Meta{ActorKind: audit.ActorSystem},
		map[string]any{"delivery_id": d.ID, "template": d.Template, "error": cause.Error()}); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("audit mail failed")
	}
	m.publishOutcome(ctx, events.TypeMailFailed, d, cause.Error())
	return cause
}

func (m *Mailer) publishOutcome(ctx context.Context, eventType string, d store.Delivery, errText string) {
	e, err := events.New(Source, eventType, d.ID.String(),
		MailOutcome{DeliveryID: d.ID, UserID: d.UserID, Template: d.Template, Attempts: d.Attempts, Error: errText}, m.now())
	if err == nil {
		e.ID = eventType + ":" + d.ID.String()
		_, err = m.publisher.Publish(ctx, e)
	}
	if err != nil {
		// Outcome events inform; the delivery row is the record.
		zerolog.Ctx(ctx).Warn().Err(err).Str("type", eventType).Msg("publish mail outcome")
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
