package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/latchkey/latchkey/internal/events"
)

// Role names a kind of worker. Operators run any subset per process and scale
// each independently; every role's consumer is durable and shared, so two
// processes with the same role split its events.
type Role string

const (
	RoleTokens    Role = "tokens"
	RoleMailer    Role = "mailer"
	RoleNotifier  Role = "notifier"
	RoleCampaigns Role = "campaigns"
	RoleScheduler Role = "scheduler"
)

// AllRoles is every worker role, in start-up order.
func AllRoles() []Role {
	return []Role{RoleTokens, RoleMailer, RoleNotifier, RoleCampaigns, RoleScheduler}
}

// roleEvents lists the events each role consumes. The scheduler is driven by
// the clock, not by events.
func roleEvents(r Role) []string {
	switch r {
	case RoleTokens:
		return []string{events.TypeResetRequested, events.TypeWelcomeRequested, events.TypeLoginNameRequested}
	case RoleMailer:
		return []string{events.TypeMailRequested}
	case RoleNotifier:
		return []string{events.TypePasswordChanged}
	case RoleCampaigns:
		return []string{events.TypeCampaignStarted}
	}
	return nil
}

// ParseRoles validates role names; none given means every role.
func ParseRoles(names []string) ([]Role, error) {
	if len(names) == 0 {
		return AllRoles(), nil
	}
	var roles []Role
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			r := Role(strings.TrimSpace(part))
			if !slices.Contains(AllRoles(), r) {
				return nil, fmt.Errorf("unknown worker role %q (roles: tokens, mailer, notifier, campaigns, scheduler)", r)
			}
			if !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	return roles, nil
}

// ErrNoHandler is the dead-letter reason for an event type this version has
// no handler for yet: it is kept, visible and replayable, never dropped.
var ErrNoHandler = errors.New("no handler for this event type in this version")

// Handlers maps event types to batch handlers (events.One adapts a
// per-event one). An event without a handler becomes a dead letter.
type Handlers map[string]events.BatchHandler

// dispatch hands each handler the events of its type, in their order.
func (h Handlers) dispatch(ctx context.Context, items []events.Item) []error {
	errs := make([]error, len(items))
	byType := map[string][]int{}
	var types []string
	for i, it := range items {
		if _, ok := byType[it.Event.Type]; !ok {
			types = append(types, it.Event.Type)
		}
		byType[it.Event.Type] = append(byType[it.Event.Type], i)
	}
	for _, t := range types {
		idx := byType[t]
		handler, ok := h[t]
		if !ok {
			for _, i := range idx {
				errs[i] = events.Permanent(fmt.Errorf("%w: %s", ErrNoHandler, t))
			}
			continue
		}
		group := make([]events.Item, len(idx))
		for k, i := range idx {
			group[k] = items[i]
		}
		for k, err := range handler(ctx, group) {
			errs[idx[k]] = err
		}
	}
	return errs
}

// tuning is how a role's runner takes events: how many batches (or single
// events) it handles at once, and how many events make a batch. The tokens
// worker decides a batch in one transaction; the mailer claims one in one
// and sends its emails SMTP_POOL at a time; the others go one by one.
func tuning(r Role) (concurrency, batchSize int) {
	switch r {
	case RoleTokens:
		return 4, 64
	case RoleMailer:
		return 2, 32
	}
	return 16, 1
}
