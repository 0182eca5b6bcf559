// Package apikeys issues and checks API keys.
//
// A key is a token "lg_<id>_<secret>": the id (12 base62 characters) finds the
// stored row, and the SHA-256 of the whole token is compared with the stored
// hash in constant time. The secret (32 base62 characters, ~190 bits) is never
// stored. The bootstrap admin key from LINKGATE_ADMIN_KEY may be any string: it
// is stored hashed under the reserved id "bootstrap" and is the row checked for
// any token not in the lg_ shape.
//
// An Authenticator is safe for concurrent use.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

// BootstrapID is the id under which the LINKGATE_ADMIN_KEY key is stored.
const BootstrapID = "bootstrap"

const (
	prefix    = "lg_"
	idLen     = 12
	secretLen = 32
)

// Store is what the package needs from storage.
type Store interface {
	CreateAPIKey(ctx context.Context, k *links.APIKey) error
	PutAPIKey(ctx context.Context, k *links.APIKey) error
	GetAPIKey(ctx context.Context, id string) (*links.APIKey, error)
}

// Hash returns the SHA-256 of a token.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Generate returns a new token and its APIKey row (not yet stored). random is
// crypto/rand.Reader outside tests.
func Generate(random io.Reader, name string, admin bool, now time.Time) (string, *links.APIKey, error) {
	id, err := links.NewCode(random, idLen)
	if err != nil {
		return "", nil, fmt.Errorf("generate key id: %w", err)
	}
	secret, err := links.NewCode(random, secretLen)
	if err != nil {
		return "", nil, fmt.Errorf("generate key secret: %w", err)
	}
	token := prefix + id + "_" + secret
	return token, &links.APIKey{ID: id, Name: name, Hash: Hash(token), Admin: admin, CreatedAt: now.UTC().Truncate(time.Microsecond)}, nil
}

// Create generates a key, stores it and returns the token, which is shown once
// and cannot be recovered.
func Create(ctx context.Context, s Store, name string, admin bool) (string, error) {
	token, k, err := Generate(rand.Reader, name, admin, time.Now())
	if err != nil {
		return "", err
	}
	if err := s.CreateAPIKey(ctx, k); err != nil {
		return "", fmt.Errorf("store key: %w", err)
	}
	return token, nil
}

// Bootstrap stores token as the admin key under BootstrapID, replacing any
// earlier bootstrap key (so rotating LINKGATE_ADMIN_KEY revokes the old one).
func Bootstrap(ctx context.Context, s Store, token string) error {
	k := &links.APIKey{ID: BootstrapID, Name: "LINKGATE_ADMIN_KEY", Hash: Hash(token), Admin: true,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.PutAPIKey(ctx, k); err != nil {
		return fmt.Errorf("store bootstrap admin key: %w", err)
	}
	return nil
}

// Authenticator checks presented tokens against the store.
type Authenticator struct {
	store Store
}

// NewAuthenticator returns an Authenticator reading keys from s.
func NewAuthenticator(s Store) *Authenticator { return &Authenticator{store: s} }

// Authenticate returns the key a token belongs to, or an EUNAUTHORIZED error
// for an unknown or wrong token. Store failures are returned as they are.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*links.APIKey, error) {
	id := BootstrapID
	if rest, ok := strings.CutPrefix(token, prefix); ok && len(rest) == idLen+1+secretLen && rest[idLen] == '_' {
		id = rest[:idLen]
	}
	k, err := a.store.GetAPIKey(ctx, id)
	if links.ErrorCode(err) == links.ENOTFOUND {
		return nil, links.Errorf(links.EUNAUTHORIZED, "Unknown API key.")
	} else if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if subtle.ConstantTimeCompare(Hash(token), k.Hash) != 1 {
		return nil, links.Errorf(links.EUNAUTHORIZED, "Unknown API key.")
	}
	return k, nil
}
