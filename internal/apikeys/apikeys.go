// Package apikeys issues and checks API keys.
//
// A key is a token "lg_<id>_<secret>": the id (12 base62 characters) finds the
// stored row, and the SHA-256 of the whole token is compared with the stored
// hash in constant time. The secret (32 base62 characters, ~190 bits) is never
// stored. The bootstrap admin key from LINKGATE_ADMIN_KEY may be any string: it
// is stored hashed under the reserved id "bootstrap" and is the row checked for
// any token not in the lg_ shape.
//
// An Authenticator remembers the key rows it read, and the ids it found no
// row for, for Config.TTL (5s by default), so that a client sending its key
// with every request, or a misconfigured one retrying a dead key, costs one
// store read per TTL and not one per request; any token not in the lg_ shape
// is checked against the one bootstrap row. The price is that a key replaced
// in the store (LINKGATE_ADMIN_KEY rotated by another instance) is honoured
// by every instance within TTL rather than at once. Concurrent reads of one
// id share a store call (golang.org/x/sync/singleflight). It also remembers
// the keys it found (their hashes, up to Config.Size, apart from the rows so
// that made-up ids cannot push them out), so that Vouched can tell a caller
// which tokens would cost a read of an id not known to hold them. An
// Authenticator is safe for concurrent use.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

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

// Config configures an Authenticator. The zero value is the default.
type Config struct {
	// TTL is how long a row read from the store, or its absence, is reused.
	// Default 5s; negative reads the store for every token.
	TTL time.Duration
	// Size bounds the ids remembered; the least recently used go first.
	// Default 10,000.
	Size int
}

// Authenticator checks presented tokens against the store.
type Authenticator struct {
	store Store
	ttl   time.Duration
	rows  *lru.Cache[string, cachedRow] // nil when TTL is negative
	reads singleflight.Group
	// real holds the hash of each id last read holding a key, apart from
	// rows so that ids found empty (made-up ones) cannot evict it.
	real *lru.Cache[string, []byte] // nil when TTL is negative

	mu      sync.Mutex
	reading map[string]struct{} // ids with a store read in flight (one per id: singleflight)
}

// cachedRow is a row read from the store, or its absence (key nil).
type cachedRow struct {
	key     *links.APIKey
	expires time.Time
}

// NewAuthenticator returns an Authenticator reading keys from s.
func NewAuthenticator(s Store, cfg Config) (*Authenticator, error) {
	if cfg.TTL == 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.Size <= 0 {
		cfg.Size = 10_000
	}
	a := &Authenticator{store: s, ttl: cfg.TTL, reading: make(map[string]struct{})}
	if cfg.TTL > 0 {
		rows, err := lru.New[string, cachedRow](cfg.Size)
		if err != nil {
			return nil, fmt.Errorf("apikeys: %w", err)
		}
		a.rows = rows
		if a.real, err = lru.New[string, []byte](cfg.Size); err != nil {
			return nil, fmt.Errorf("apikeys: %w", err)
		}
	}
	return a, nil
}

// Authenticate returns the key a token belongs to, or an EUNAUTHORIZED error
// for an unknown or wrong token. Store failures are returned as they are.
// The key returned may be shared with other callers: do not modify it.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*links.APIKey, error) {
	k, err := a.row(ctx, idOf(token))
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if k == nil || subtle.ConstantTimeCompare(Hash(token), k.Hash) != 1 {
		return nil, links.Errorf(links.EUNAUTHORIZED, "Unknown API key.")
	}
	return k, nil
}

// Vouched reports whether checking token costs no store read of an id not
// known to hold a key: its id's row (or absence) was read less than TTL ago,
// a read of it is in flight (Authenticate shares it), or the token itself
// matched the key its id held when last read (the read only re-checks a real
// key; real keys are remembered apart from absences, so made-up ids do not
// push them out). Otherwise Authenticate will read the store for an id never
// seen to hold this token's key, which is what a caller rations: made-up
// tokens would cost one read each. Always false when the TTL is negative.
func (a *Authenticator) Vouched(token string) bool {
	if a.rows == nil {
		return false
	}
	id := idOf(token)
	if r, ok := a.rows.Peek(id); ok && time.Now().Before(r.expires) {
		return true
	}
	if h, ok := a.real.Peek(id); ok && subtle.ConstantTimeCompare(Hash(token), h) == 1 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_, reading := a.reading[id]
	return reading
}

// idOf is the id of the row a token is checked against: the id part of an
// lg_ token, and the bootstrap row for any other shape.
func idOf(token string) string {
	if rest, ok := strings.CutPrefix(token, prefix); ok && len(rest) == idLen+1+secretLen && rest[idLen] == '_' {
		return rest[:idLen]
	}
	return BootstrapID
}

// row returns the stored key id, or nil when there is none, from the cache
// while fresh. Concurrent misses on one id share one store read, made
// without the first caller's cancellation (the store bounds its calls), so
// that one caller going away does not fail the others; each caller still
// stops waiting when its own ctx ends. A row is kept for TTL from when its
// read began, so no answer is older than TTL.
func (a *Authenticator) row(ctx context.Context, id string) (*links.APIKey, error) {
	if a.rows != nil {
		if r, ok := a.rows.Get(id); ok && time.Now().Before(r.expires) {
			return r.key, nil
		}
	}
	shared := a.reads.DoChan(id, func() (any, error) {
		a.mu.Lock()
		a.reading[id] = struct{}{}
		a.mu.Unlock()
		defer func() { // after the row is cached: Vouched has no gap
			a.mu.Lock()
			delete(a.reading, id)
			a.mu.Unlock()
		}()
		began := time.Now()
		k, err := a.store.GetAPIKey(context.WithoutCancel(ctx), id)
		if links.ErrorCode(err) == links.ENOTFOUND {
			k, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		if a.rows != nil {
			a.rows.Add(id, cachedRow{key: k, expires: began.Add(a.ttl)})
			if k != nil {
				a.real.Add(id, k.Hash)
			} else {
				a.real.Remove(id)
			}
		}
		return k, nil
	})
	select {
	case r := <-shared:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*links.APIKey), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
