package links

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Store is what the Service needs from durable storage (internal/store
// implements it). A nil error from CreateLink means the link is durable.
type Store interface {
	CreateLink(ctx context.Context, l *Link) error
	GetLink(ctx context.Context, code string) (*Link, error)
	DeleteLink(ctx context.Context, code string, id int64) error // id 0: any link with the code
	ListLinks(ctx context.Context, p ListParams) ([]*Link, error)
}

// Resolver finds the link behind a code for the redirect path; internal/cache
// implements it in front of the store. It returns an ENOTFOUND error for
// unknown codes. The returned Link may be shared: callers must not modify it.
type Resolver interface {
	Resolve(ctx context.Context, code string) (Target, error)
}

// Invalidator drops what caches hold for a code; the Service calls it after a
// link is created (to clear a cached "unknown") and after it is deleted.
type Invalidator interface {
	Invalidate(ctx context.Context, code string) error
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Store is the source of truth. Required.
	Store Store
	// Resolver serves the redirect path. Default: Store.GetLink.
	Resolver Resolver
	// Invalidator is told about created and deleted codes. Default: none.
	Invalidator Invalidator
	// URLs is the URL validation policy.
	URLs URLPolicy
	// Random is the source of short codes. Default: crypto/rand.Reader.
	Random io.Reader
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger. Default: discard.
	Logger *slog.Logger
}

// maxCodeAttempts bounds retries of random codes on collision; after half of
// them the code grows by one character.
const maxCodeAttempts = 8

// Service creates, resolves, lists and deletes links. It is safe for
// concurrent use.
type Service struct {
	cfg ServiceConfig
}

type storeResolver struct{ s Store }

func (r storeResolver) Resolve(ctx context.Context, code string) (Target, error) {
	l, err := r.s.GetLink(ctx, code)
	if err != nil {
		return Target{}, err
	}
	return l.Target(), nil
}

type noInvalidator struct{}

func (noInvalidator) Invalidate(context.Context, string) error { return nil }

// NewService returns a Service, or an error when a required dependency is missing.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("links: ServiceConfig.Store is required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = storeResolver{cfg.Store}
	}
	if cfg.Invalidator == nil {
		cfg.Invalidator = noInvalidator{}
	}
	if cfg.Random == nil {
		cfg.Random = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg}, nil
}

// CreateRequest is what a client asks for. Zero values mean defaults: a random
// code, no expiry, DefaultRedirect.
type CreateRequest struct {
	URL       string
	Code      string
	ExpiresAt time.Time
	Redirect  int
}

// maxExpiry bounds how far in the future expires_at may lie.
const maxExpiry = 100 * 365 * 24 * time.Hour

// Create validates req and stores a new link. Errors: EINVALID (with Field
// url, code, expires_at or redirect) for bad input, ECONFLICT when a custom
// code is taken. A nil error means the link is durable.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Link, error) {
	now := s.cfg.Now().UTC().Truncate(time.Microsecond)
	target, err := s.cfg.URLs.Normalize(req.URL)
	if err != nil {
		return nil, err
	}
	l := &Link{URL: target, Redirect: req.Redirect, CreatedAt: now}
	if l.Redirect == 0 {
		l.Redirect = DefaultRedirect
	} else if !ValidRedirect(l.Redirect) {
		return nil, FieldErrorf("redirect", "redirect must be one of 301, 302, 307 or 308.")
	}
	if !req.ExpiresAt.IsZero() {
		exp := req.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !exp.After(now) {
			return nil, FieldErrorf("expires_at", "expires_at must be in the future.")
		}
		if exp.Sub(now) > maxExpiry {
			return nil, FieldErrorf("expires_at", "expires_at must be within 100 years.")
		}
		l.ExpiresAt = exp
	}

	if req.Code != "" {
		if err := ValidateAlias(req.Code); err != nil {
			return nil, err
		}
		l.Code = req.Code
		if err := s.cfg.Store.CreateLink(ctx, l); err != nil {
			if ErrorCode(err) == ECONFLICT {
				return nil, &Error{Code: ECONFLICT, Field: "code", Message: fmt.Sprintf("The code %q is already taken.", req.Code)}
			}
			return nil, fmt.Errorf("create link: %w", err)
		}
	} else if err := s.createRandom(ctx, l); err != nil {
		return nil, err
	}
	s.invalidate(ctx, l.Code)
	return l, nil
}

// createRandom stores l under a fresh random code; the unique index decides
// collisions, which are retried.
func (s *Service) createRandom(ctx context.Context, l *Link) error {
	n := CodeLength
	for attempt := 1; ; attempt++ {
		code, err := NewCode(s.cfg.Random, n)
		if err != nil {
			return fmt.Errorf("generate code: %w", err)
		}
		l.Code = code
		err = s.cfg.Store.CreateLink(ctx, l)
		if err == nil {
			return nil
		}
		if ErrorCode(err) != ECONFLICT {
			return fmt.Errorf("create link: %w", err)
		}
		if attempt == maxCodeAttempts {
			return fmt.Errorf("create link: %d code collisions in a row", attempt)
		}
		if attempt == maxCodeAttempts/2 {
			n++
		}
	}
}

// invalidate tells the caches; a failure is logged, not returned, because the
// write already happened (a stale negative entry lives at most its short TTL).
func (s *Service) invalidate(ctx context.Context, code string) {
	if err := s.cfg.Invalidator.Invalidate(ctx, code); err != nil {
		s.cfg.Logger.Warn("cache invalidation failed", "code", code, "err", err)
	}
}

// Resolve returns the target to redirect to. Errors: ENOTFOUND for codes
// that are not stored (or could not be), EGONE for expired links.
func (s *Service) Resolve(ctx context.Context, code string) (Target, error) {
	if !ValidCode(code) {
		return Target{}, Errorf(ENOTFOUND, "No link with this code.")
	}
	t, err := s.cfg.Resolver.Resolve(ctx, code)
	if err != nil {
		if ErrorCode(err) == ENOTFOUND {
			return Target{}, Errorf(ENOTFOUND, "No link with this code.")
		}
		return Target{}, fmt.Errorf("resolve %q: %w", code, err)
	}
	// Most links never expire: no clock read for them.
	if !t.ExpiresAt.IsZero() && t.Expired(s.cfg.Now()) {
		return Target{}, Errorf(EGONE, "This link expired at %s.", t.ExpiresAt.Format(time.RFC3339))
	}
	return t, nil
}

// Get returns a link's metadata from the store (fresh click count), expired
// or not. Errors: ENOTFOUND.
func (s *Service) Get(ctx context.Context, code string) (*Link, error) {
	if !ValidCode(code) {
		return nil, Errorf(ENOTFOUND, "No link with this code.")
	}
	l, err := s.cfg.Store.GetLink(ctx, code)
	if err != nil {
		if ErrorCode(err) == ENOTFOUND {
			return nil, Errorf(ENOTFOUND, "No link with this code.")
		}
		return nil, fmt.Errorf("get %q: %w", code, err)
	}
	return l, nil
}

// Delete removes a link and drops it from the caches. When precondition is
// not nil it is called with the current link first and its error aborts the
// delete (If-Match); the delete then removes only the link it checked, so a
// link deleted and created again under the same code meanwhile stays and
// the answer is EPRECONDITION (RFC 9110 §13.1.1: the checked representation
// is no longer current). Once the store was asked to delete, the caches are
// told to forget the code even when it answers with an error: the delete may
// have happened anyway (a timeout after the commit). Errors: ENOTFOUND,
// EPRECONDITION, whatever precondition returns.
func (s *Service) Delete(ctx context.Context, code string, precondition func(*Link) error) error {
	var id int64
	if precondition != nil {
		l, err := s.Get(ctx, code)
		if err != nil {
			return err
		}
		if err := precondition(l); err != nil {
			return err
		}
		id = l.ID
	} else if !ValidCode(code) {
		return Errorf(ENOTFOUND, "No link with this code.")
	}
	if err := s.cfg.Store.DeleteLink(ctx, code, id); err != nil {
		// The delete may have happened anyway (a timeout after the commit,
		// or an earlier attempt whose invalidation failed, retried now as a
		// 404), so the caches forget the code whatever the store says.
		s.invalidate(ctx, code)
		if ErrorCode(err) == ENOTFOUND && id != 0 {
			return Errorf(EPRECONDITION, "The link changed while it was being deleted; it was not deleted.")
		}
		if ErrorCode(err) == ENOTFOUND {
			return Errorf(ENOTFOUND, "No link with this code.")
		}
		return fmt.Errorf("delete %q: %w", code, err)
	}
	s.invalidate(ctx, code)
	return nil
}

// List returns one page of links, newest first, and the cursor of the next
// page (zero when this is the last page).
func (s *Service) List(ctx context.Context, p ListParams) ([]*Link, Cursor, error) {
	if p.Limit == 0 {
		p.Limit = DefaultListLimit
	}
	if p.Limit < 1 || p.Limit > MaxListLimit {
		return nil, Cursor{}, &Error{Code: EBADREQUEST, Field: "limit", Message: fmt.Sprintf("limit must be between 1 and %d.", MaxListLimit)}
	}
	// Ask for one more than the page to know whether a next page exists.
	page := p
	page.Limit++
	ls, err := s.cfg.Store.ListLinks(ctx, page)
	if err != nil {
		return nil, Cursor{}, fmt.Errorf("list links: %w", err)
	}
	var next Cursor
	if len(ls) > p.Limit {
		ls = ls[:p.Limit]
		next = Cursor{AfterID: ls[len(ls)-1].ID}
	}
	return ls, next, nil
}
