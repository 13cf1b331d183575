package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// Domain is a tenant.
type Domain struct {
	ID        uuid.UUID
	Name      string
	Locale    string
	CreatedAt time.Time
}

// User is an account as the rest of the program sees it. Secret hashes are
// summarised as booleans; code that verifies secrets asks for them explicitly.
type User struct {
	ID           uuid.UUID
	DomainID     uuid.UUID
	DomainName   string
	Extension    string
	LoginName    string
	Email        string
	FirstName    string
	LastName     string
	Locale       string
	PasswordSet  bool
	PINSet       bool
	Status       string
	FailedLogins int
	LockedUntil  *time.Time
	RolloutPhase string
	CreatedAt    time.Time
	// CredentialVersion changes with every change of a secret or the status.
	CredentialVersion int64
	// The PHC hashes, for the code that verifies secrets. Never serialised.
	PasswordHash *string `json:"-"`
	PINHash      *string `json:"-"`
}

// NewUser is what CreateUsers needs for one account. Hashes are PHC strings,
// nil when the secret is not set.
type NewUser struct {
	DomainID     uuid.UUID
	Extension    string
	LoginName    string
	Email        string
	FirstName    string
	LastName     string
	Locale       string
	PasswordHash *string
	PINHash      *string
}

// UserFilter selects users for ListUsers.
type UserFilter struct {
	DomainID    *uuid.UUID
	PasswordSet *bool
	AfterID     *uuid.UUID
	Limit       int
}

// CreateDomain adds a tenant; a taken name is a *ConflictError.
func (s *Store) CreateDomain(ctx context.Context, name, locale string) (Domain, error) {
	row, err := s.q.CreateDomain(ctx, s.pool, dbsqlc.CreateDomainParams{Name: name, Locale: locale})
	if err != nil {
		return Domain{}, translate("create domain", err)
	}
	return domainFromRow(row), nil
}

// DomainByName finds a tenant by its name.
func (s *Store) DomainByName(ctx context.Context, name string) (Domain, error) {
	row, err := s.q.GetDomainByName(ctx, s.pool, name)
	if err != nil {
		return Domain{}, translate("get domain", err)
	}
	return domainFromRow(row), nil
}

// DomainByID finds a tenant by its id.
func (s *Store) DomainByID(ctx context.Context, id uuid.UUID) (Domain, error) {
	row, err := s.q.GetDomain(ctx, s.pool, id)
	if err != nil {
		return Domain{}, translate("get domain", err)
	}
	return domainFromRow(row), nil
}

// DomainFilter selects domains for ListDomains.
type DomainFilter struct {
	// OnlyID confines the listing to one domain (an admin key's scope).
	OnlyID  *uuid.UUID
	AfterID *uuid.UUID
	Limit   int
}

// ListDomains pages through tenants in id order.
func (s *Store) ListDomains(ctx context.Context, f DomainFilter) ([]Domain, error) {
	rows, err := s.q.ListDomains(ctx, s.pool, dbsqlc.ListDomainsParams{OnlyID: f.OnlyID, AfterID: f.AfterID, MaxRows: int32(f.Limit)})
	if err != nil {
		return nil, translate("list domains", err)
	}
	domains := make([]Domain, len(rows))
	for i, r := range rows {
		domains[i] = domainFromRow(r)
	}
	return domains, nil
}

// Profile is what an admin changes of a user: every field, changed or not.
type Profile struct {
	FirstName string
	LastName  string
	Email     string
	Locale    string
	Extension string
}

// UpdateProfile stores a user's profile in tx, whose caller holds the user's
// row lock (LockUser), and returns the user (DomainName left empty). An
// extension taken in the domain is a *ConflictError naming
// users_domain_extension_key.
func (s *Store) UpdateProfile(ctx context.Context, tx pgx.Tx, id uuid.UUID, p Profile, now time.Time) (User, error) {
	row, err := s.q.UpdateUserProfile(ctx, tx, dbsqlc.UpdateUserProfileParams{
		ID: id, FirstName: p.FirstName, LastName: p.LastName, Email: p.Email, Locale: p.Locale, Extension: p.Extension, Now: now,
	})
	if err != nil {
		return User{}, translate("update user", err)
	}
	return userFromRow(row, ""), nil
}

// UserHasDeliveryInFlight reports whether a mailer may be sending one of the
// user's emails: a delivery claimed (sending) and renewed since staleBefore,
// the moment a mailer's claim lease would have run out. Asked in tx under
// the user's row lock, which every claim takes first, it cannot miss a claim
// that commits later.
func (s *Store) UserHasDeliveryInFlight(ctx context.Context, tx pgx.Tx, userID uuid.UUID, staleBefore time.Time) (bool, error) {
	found, err := s.q.UserHasDeliveryInFlight(ctx, s.on(tx), dbsqlc.UserHasDeliveryInFlightParams{UserID: &userID, StaleBefore: staleBefore})
	return found, translate("look for deliveries in flight", err)
}

// CreateUsers adds accounts all or nothing. On a uniqueness conflict the
// error is a *BatchError naming the index of the offending entry.
func (s *Store) CreateUsers(ctx context.Context, users []NewUser) ([]User, error) {
	created := make([]User, 0, len(users))
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		created = created[:0] // afresh if the transaction is run again
		for i, u := range users {
			row, err := s.q.CreateUser(ctx, tx, dbsqlc.CreateUserParams{
				DomainID:     u.DomainID,
				Extension:    u.Extension,
				LoginName:    u.LoginName,
				Email:        u.Email,
				FirstName:    u.FirstName,
				LastName:     u.LastName,
				Locale:       u.Locale,
				PasswordHash: u.PasswordHash,
				PinHash:      u.PINHash,
			})
			if err != nil {
				return &BatchError{Index: i, Err: translate("create user", err)}
			}
			created = append(created, userFromRow(row, ""))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return created, nil
}

// LoginNamesInNamespace reports whether any login name ends in @domainName.
func (s *Store) LoginNamesInNamespace(ctx context.Context, domainName string) (bool, error) {
	found, err := s.q.LoginNamesInNamespace(ctx, s.pool, domainName)
	return found, translate("look for login names in a namespace", err)
}

// EmailInOtherDomain reports whether a user outside domainID has this email.
func (s *Store) EmailInOtherDomain(ctx context.Context, email string, domainID uuid.UUID) (bool, error) {
	found, err := s.q.EmailInOtherDomain(ctx, s.pool, dbsqlc.EmailInOtherDomainParams{Email: email, DomainID: domainID})
	return found, translate("look for an email in other domains", err)
}

// BatchError tells which entry of a batch failed.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string { return e.Err.Error() }
func (e *BatchError) Unwrap() error { return e.Err }

// ListUsers pages through accounts in id order.
func (s *Store) ListUsers(ctx context.Context, f UserFilter) ([]User, error) {
	rows, err := s.q.ListUsers(ctx, s.pool, dbsqlc.ListUsersParams{
		DomainID:    f.DomainID,
		PasswordSet: f.PasswordSet,
		AfterID:     f.AfterID,
		MaxRows:     int32(f.Limit),
	})
	if err != nil {
		return nil, translate("list users", err)
	}
	users := make([]User, len(rows))
	for i, r := range rows {
		users[i] = userFromRow(r.User, r.DomainName)
	}
	return users, nil
}

func domainFromRow(r dbsqlc.Domain) Domain {
	return Domain{ID: r.ID, Name: r.Name, Locale: r.Locale, CreatedAt: r.CreatedAt}
}

func userFromRow(r dbsqlc.User, domainName string) User {
	return User{
		ID: r.ID, DomainID: r.DomainID, DomainName: domainName, Extension: r.Extension, LoginName: r.LoginName,
		Email: r.Email, FirstName: r.FirstName, LastName: r.LastName, Locale: r.Locale,
		PasswordSet: r.PasswordHash != nil, PINSet: r.PinHash != nil, Status: r.Status,
		FailedLogins: int(r.FailedLogins), LockedUntil: r.LockedUntil, RolloutPhase: r.RolloutPhase,
		CreatedAt: r.CreatedAt, CredentialVersion: r.CredentialVersion, PasswordHash: r.PasswordHash, PINHash: r.PinHash,
	}
}
