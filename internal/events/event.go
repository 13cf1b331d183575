// Package events is Latchkey's JetStream plumbing: the CloudEvents envelope,
// the stream and its durable consumers, a de-duplicating publisher, and the
// runner that feeds events to worker handlers with retries and dead letters.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SubjectPrefix starts every subject of the service; the subject of an event
// is SubjectPrefix followed by its type.
const SubjectPrefix = "latchkey."

// Event types. A portal backend may publish the *.requested ones itself.
const (
	TypeResetRequested      = "reset.requested"
	TypeWelcomeRequested    = "welcome.requested"
	TypeLoginNameRequested  = "loginname.requested"
	TypePasswordChanged     = "password.changed"
	TypeMailRequested       = "mail.requested"
	TypeMailDelivered       = "mail.delivered"
	TypeMailFailed          = "mail.failed"
	TypeCampaignStarted     = "campaign.started"
	TypeRolloutPhaseChanged = "rollout.phase_changed"
)

// ContentType is the NATS Content-Type header of a structured CloudEvent.
const ContentType = "application/cloudevents+json"

// maxIDLength bounds event ids because they become Nats-Msg-Id headers and
// database keys.
const maxIDLength = 128

// Event is a CloudEvents 1.0 envelope in structured JSON form. Its ID is also
// the Nats-Msg-Id, so publishing the same event twice stores it once.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// New builds an event with a fresh id. data is marshalled to JSON.
func New(source, eventType, subject string, data any, now time.Time) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", eventType, err)
	}
	return Event{
		SpecVersion:     "1.0",
		ID:              uuid.NewString(),
		Source:          source,
		Type:            eventType,
		Time:            now.UTC(),
		Subject:         subject,
		DataContentType: "application/json",
		Data:            raw,
	}, nil
}

// NATSSubject is where the event is published.
func (e Event) NATSSubject() string { return SubjectPrefix + e.Type }

// ErrInvalidEvent marks an envelope that can never be processed.
var ErrInvalidEvent = errors.New("invalid event")

// Validate checks the envelope's required attributes.
func (e Event) Validate() error {
	switch {
	case e.SpecVersion != "1.0":
		return fmt.Errorf("%w: specversion must be 1.0", ErrInvalidEvent)
	case e.ID == "" || len(e.ID) > maxIDLength || strings.ContainsAny(e.ID, " \r\n\t"):
		return fmt.Errorf("%w: id must be 1 to %d characters without spaces", ErrInvalidEvent, maxIDLength)
	case e.Source == "":
		return fmt.Errorf("%w: source is required", ErrInvalidEvent)
	case e.Type == "" || strings.ContainsAny(e.Type, " *>\r\n\t"):
		return fmt.Errorf("%w: type is required and must be a plain token", ErrInvalidEvent)
	case len(e.Data) == 0:
		return fmt.Errorf("%w: data is required", ErrInvalidEvent)
	}
	return nil
}

// Decode parses and validates an envelope received on natsSubject.
func Decode(natsSubject string, body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("%w: not a JSON CloudEvent: %w", ErrInvalidEvent, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	if e.NATSSubject() != natsSubject {
		return Event{}, fmt.Errorf("%w: type %q does not match subject %q", ErrInvalidEvent, e.Type, natsSubject)
	}
	return e, nil
}

// DecodeData unmarshals the event's data into v.
func (e Event) DecodeData(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("%w: data of %s: %w", ErrInvalidEvent, e.Type, err)
	}
	return nil
}
