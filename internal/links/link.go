package links

import "time"

// Redirect statuses a link may answer with. DefaultRedirect is used when a
// create request names none.
const (
	RedirectMovedPermanently = 301
	RedirectFound            = 302
	RedirectTemporary        = 307
	RedirectPermanent        = 308
	DefaultRedirect          = RedirectFound
)

// ValidRedirect reports whether status is one a link may be created with.
func ValidRedirect(status int) bool {
	switch status {
	case RedirectMovedPermanently, RedirectFound, RedirectTemporary, RedirectPermanent:
		return true
	}
	return false
}

// Link is one short link. A Link read from a store is a copy the caller owns.
type Link struct {
	// ID is the store's monotonically assigned row id; it orders the
	// newest-first listing and backs its keyset cursor. Zero until stored.
	ID int64
	// Code is the short code: 7+ base62 characters when generated, or a
	// custom alias matching [A-Za-z0-9_-]{3,64}.
	Code string
	// URL is the validated, normalised target (IDN hosts in punycode).
	URL string
	// Redirect is the status the redirect answers with (301/302/307/308).
	Redirect int
	// CreatedAt is set by the service at creation, truncated to microseconds
	// so that both stores round-trip it exactly.
	CreatedAt time.Time
	// ExpiresAt is the zero time when the link never expires.
	ExpiresAt time.Time
	// Clicks is the number of redirects flushed to the store so far.
	Clicks int64
	// UpdatedAt is when the stored row last changed (clicks flushed); the
	// zero time when it never changed after creation.
	UpdatedAt time.Time
}

// Expired reports whether l has an expiry at or before now.
func (l *Link) Expired(now time.Time) bool {
	return !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt)
}

// Target is what a redirect needs of a link, and all that the resolver
// caches keep of one: its code, where and how it redirects, and until when.
type Target struct {
	Code      string
	URL       string
	Redirect  int
	ExpiresAt time.Time // the zero time when the link never expires
}

// Target returns l's redirect target.
func (l *Link) Target() Target {
	return Target{Code: l.Code, URL: l.URL, Redirect: l.Redirect, ExpiresAt: l.ExpiresAt}
}

// Expired reports whether t has an expiry at or before now.
func (t *Target) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// Cursor is a keyset position in the newest-first listing: the next page holds
// links with ID < AfterID. The zero Cursor means "from the newest".
type Cursor struct {
	AfterID int64
}

// ListParams selects one page of the listing.
type ListParams struct {
	Limit  int // 1..MaxListLimit; the service applies the default
	Cursor Cursor
}

// Listing limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// APIKey is a stored API key. The secret itself is never stored: only the
// SHA-256 of the whole presented token.
type APIKey struct {
	// ID is the public part of the key, used to find the row before the
	// constant-time hash comparison.
	ID        string
	Name      string
	Hash      []byte // SHA-256 of the full token, 32 bytes
	Admin     bool
	CreatedAt time.Time
}
