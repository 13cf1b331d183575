package accounts

import (
	"context"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/store"
)

// User finds one user (GET /v1/admin/users/{id}). A user outside the key's
// scope is store.ErrNotFound, exactly like an unknown one.
func (s *Service) User(ctx context.Context, scope Scope, id uuid.UUID) (store.User, error) {
	u, err := s.store.UserWithDomain(ctx, nil, id)
	if err == nil && !scope.covers(u.DomainID) {
		return store.User{}, store.ErrNotFound
	}
	return u, err
}

// Domain finds one tenant (GET /v1/admin/domains/{id}). A domain outside the
// key's scope is store.ErrNotFound, exactly like an unknown one.
func (s *Service) Domain(ctx context.Context, scope Scope, id uuid.UUID) (store.Domain, error) {
	d, err := s.store.DomainByID(ctx, id)
	if err == nil && !scope.covers(d.ID) {
		return store.Domain{}, store.ErrNotFound
	}
	return d, err
}

// ListDomains pages through tenants in id order, after the given id when
// set, at most limit of them; a key limited to a domain sees only that one.
func (s *Service) ListDomains(ctx context.Context, scope Scope, after *uuid.UUID, limit int) ([]store.Domain, error) {
	return s.store.ListDomains(ctx, store.DomainFilter{OnlyID: scope.DomainID, AfterID: after, Limit: limit})
}
