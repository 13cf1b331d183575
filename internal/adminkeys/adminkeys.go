// Package adminkeys issues and checks the bearer keys of the admin API: the
// bootstrap ADMIN_TOKEN from the configuration, and keys made with
// `latchkey admin-key create`, stored only as SHA-256 digests.
package adminkeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/identifier"
	"github.com/latchkey/latchkey/internal/store"
)

// keyPrefix makes leaked keys easy to recognise (secret scanners, logs).
const keyPrefix = "lk_admin_"

// ErrUnauthenticated means no valid admin key was presented.
var ErrUnauthenticated = errors.New("no valid admin key")

// Principal is the admin a request acts for.
type Principal struct {
	// KeyID is "bootstrap" for ADMIN_TOKEN, else the key's id; audit trails
	// record it as the actor.
	KeyID    string
	DomainID *uuid.UUID
}

// Authenticator checks bearer keys.
type Authenticator struct {
	store     *store.Store
	bootstrap []byte // SHA-256 of ADMIN_TOKEN, nil when unset
}

// NewAuthenticator builds an authenticator; bootstrapToken may be empty.
func NewAuthenticator(st *store.Store, bootstrapToken string) *Authenticator {
	a := &Authenticator{store: st}
	if bootstrapToken != "" {
		sum := sha256.Sum256([]byte(bootstrapToken))
		a.bootstrap = sum[:]
	}
	return a
}

// Authenticate resolves a bearer key to its principal.
func (a *Authenticator) Authenticate(ctx context.Context, key string) (Principal, error) {
	if key == "" || len(key) > 256 {
		return Principal{}, ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(key))
	if a.bootstrap != nil && subtle.ConstantTimeCompare(sum[:], a.bootstrap) == 1 {
		return Principal{KeyID: "bootstrap"}, nil
	}
	if !strings.HasPrefix(key, keyPrefix) {
		return Principal{}, ErrUnauthenticated
	}
	// The lookup is by digest, so its timing says nothing about the key.
	k, err := a.store.AdminKeyByHash(ctx, sum[:])
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up admin key: %w", err)
	}
	if k.Revoked {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{KeyID: k.ID.String(), DomainID: k.DomainID}, nil
}

// Create makes a new key and stores its digest; the key itself is returned
// once and never stored.
func Create(ctx context.Context, st *store.Store, name, domain string) (key string, created store.AdminKey, err error) {
	var domainID *uuid.UUID
	if domain != "" {
		name, _ := identifier.DomainName(domain)
		d, err := st.DomainByName(ctx, name)
		if err != nil {
			return "", store.AdminKey{}, fmt.Errorf("admin key domain %q: %w", domain, err)
		}
		domainID = &d.ID
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", store.AdminKey{}, fmt.Errorf("generate admin key: %w", err)
	}
	key = keyPrefix + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(key))
	created, err = st.CreateAdminKey(ctx, name, domainID, sum[:])
	if err != nil {
		return "", store.AdminKey{}, err
	}
	return key, created, nil
}
