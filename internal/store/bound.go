package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

// Bound returns a Store that gives every call of s at most timeout (the
// caller's own deadline still applies when it is sooner), so that a stuck
// database holds a request for timeout and not until the client gives up.
// A call that fails because that bound passed, while the caller's context is
// still live, returns an EUNAVAILABLE error wrapping the driver's (HTTP 503);
// whether a write that timed out was applied is then unknown, as with any
// timeout, but a nil error still means durable. AddClicks and Close pass
// through unbounded: the click flusher bounds its own flushes. A timeout
// of zero or less returns s as is.
func Bound(s Store, timeout time.Duration) Store {
	if timeout <= 0 {
		return s
	}
	return &bounded{next: s, timeout: timeout}
}

type bounded struct {
	next    Store
	timeout time.Duration
}

var _ Store = (*bounded)(nil)

// call runs fn under the bound and translates a timeout it caused.
func (b *bounded) call(ctx context.Context, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	err := fn(cctx)
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", links.Errorf(links.EUNAVAILABLE,
			"The database did not answer within %v; retry later.", b.timeout), err)
	}
	return err
}

func (b *bounded) CreateLink(ctx context.Context, l *links.Link) error {
	return b.call(ctx, func(ctx context.Context) error { return b.next.CreateLink(ctx, l) })
}

func (b *bounded) GetLink(ctx context.Context, code string) (l *links.Link, err error) {
	err = b.call(ctx, func(ctx context.Context) error { l, err = b.next.GetLink(ctx, code); return err })
	return l, err
}

func (b *bounded) DeleteLink(ctx context.Context, code string, id int64) error {
	return b.call(ctx, func(ctx context.Context) error { return b.next.DeleteLink(ctx, code, id) })
}

func (b *bounded) ListLinks(ctx context.Context, p links.ListParams) (ls []*links.Link, err error) {
	err = b.call(ctx, func(ctx context.Context) error { ls, err = b.next.ListLinks(ctx, p); return err })
	return ls, err
}

func (b *bounded) AddClicks(ctx context.Context, counts map[string]int64) error {
	return b.next.AddClicks(ctx, counts)
}

func (b *bounded) CreateAPIKey(ctx context.Context, k *links.APIKey) error {
	return b.call(ctx, func(ctx context.Context) error { return b.next.CreateAPIKey(ctx, k) })
}

func (b *bounded) PutAPIKey(ctx context.Context, k *links.APIKey) error {
	return b.call(ctx, func(ctx context.Context) error { return b.next.PutAPIKey(ctx, k) })
}

func (b *bounded) GetAPIKey(ctx context.Context, id string) (k *links.APIKey, err error) {
	err = b.call(ctx, func(ctx context.Context) error { k, err = b.next.GetAPIKey(ctx, id); return err })
	return k, err
}

func (b *bounded) Ping(ctx context.Context) error {
	return b.call(ctx, b.next.Ping)
}

func (b *bounded) Close() error { return b.next.Close() }
