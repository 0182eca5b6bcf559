// Package handlers holds linkgate's Fiber handlers: the JSON API v1, the
// redirect, the seed-compatible routes of the original exercise, API-key
// authentication, and the one error handler that renders every error as
// application/problem+json (RFC 9457).
//
// Handlers see only the small interfaces declared here, never SQL or Redis.
// A Handlers value is safe for concurrent use.
package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

// LinkService is what the handlers need from the domain (links.Service).
type LinkService interface {
	Create(ctx context.Context, req links.CreateRequest) (*links.Link, error)
	Resolve(ctx context.Context, code string) (links.Target, error)
	Get(ctx context.Context, code string) (*links.Link, error)
	Delete(ctx context.Context, code string, precondition func(*links.Link) error) error
	List(ctx context.Context, p links.ListParams) ([]*links.Link, links.Cursor, error)
}

// ClickCounter counts redirects (clicks.Counter).
type ClickCounter interface {
	Add(code string)
}

// Authenticator checks API keys (apikeys.Authenticator). It returns an
// EUNAUTHORIZED error for unknown tokens. Vouched reports whether checking a
// token costs no store read of an id not known to hold a key.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*links.APIKey, error)
	Vouched(token string) bool
}

// Metrics counts business events (metrics.Metrics).
type Metrics interface {
	LinkCreated()
	// Redirect counts a redirect attempt by result: found, not_found,
	// expired or error.
	Redirect(result string)
}

// Config configures Handlers.
type Config struct {
	Links  LinkService   // required
	Clicks ClickCounter  // required
	Auth   Authenticator // required
	// BaseURL prefixes every short_url, without a trailing slash.
	BaseURL string
	// PublicCreate allows creating links without an API key.
	PublicCreate bool
	// RedirectMaxAge is the max-age of Cache-Control on redirects.
	RedirectMaxAge time.Duration
	// Metrics; default none.
	Metrics Metrics
	// Logger; default discard.
	Logger *slog.Logger
}

type noMetrics struct{}

func (noMetrics) LinkCreated()    {}
func (noMetrics) Redirect(string) {}

// Handlers are the route handlers; make them with New.
type Handlers struct {
	cfg Config
	// redirectCacheControl is computed once: the redirect path does no formatting.
	redirectCacheControl string
}

// New returns Handlers, or an error when a required dependency is missing.
func New(cfg Config) (*Handlers, error) {
	if cfg.Links == nil || cfg.Clicks == nil || cfg.Auth == nil {
		return nil, fmt.Errorf("handlers: Links, Clicks and Auth are required")
	}
	if cfg.BaseURL == "" {
		return nil, fmt.Errorf("handlers: BaseURL is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Handlers{
		cfg:                  cfg,
		redirectCacheControl: "private, max-age=" + strconv.Itoa(int(cfg.RedirectMaxAge/time.Second)),
	}, nil
}

// linkJSON is the API representation of a link.
type linkJSON struct {
	Code      string     `json:"code"`
	ShortURL  string     `json:"short_url"`
	URL       string     `json:"url"`
	Redirect  int        `json:"redirect"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Clicks    int64      `json:"clicks"`
}

// view is the representation of l and when it last changed. clicks is the
// durable count, at most one flush interval behind: counts still in one
// instance's memory are left out, so every instance shows the same
// representation (and ETag) for the same stored link.
func (h *Handlers) view(l *links.Link) (linkJSON, time.Time) {
	j := linkJSON{
		Code: l.Code, ShortURL: h.cfg.BaseURL + "/" + l.Code, URL: l.URL, Redirect: l.Redirect,
		CreatedAt: l.CreatedAt, Clicks: l.Clicks,
	}
	if !l.ExpiresAt.IsZero() {
		exp := l.ExpiresAt
		j.ExpiresAt = &exp
	}
	return j, lastModified(l)
}
