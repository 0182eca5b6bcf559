package cache

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Run receives invalidations from every instance (Invalidate publishes them on
// Channel) and evicts their codes from this instance's L1, and retries failed
// invalidations every RetryInterval and once more, within finalRetryTimeout,
// when ctx ends. It returns nil when ctx is done or the Cache is closed, and
// an error only when it is already running or the subscription ends by
// itself.
//
// go-redis reconnects the subscription after Redis restarts or the
// connection breaks (a health-check PING finds dead connections within
// seconds). Each time the subscription is confirmed, the first time included,
// Run clears all of L1, since invalidations published while it was
// unsubscribed were lost, and retries the failed invalidations.
//
// Without Redis, Run only waits for ctx or Close.
func (c *Cache) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("cache run: already running")
	}
	defer c.running.Store(false)
	select {
	case <-c.done:
		return nil
	default:
	}
	if c.cfg.Redis == nil {
		select {
		case <-ctx.Done():
		case <-c.done:
		}
		return nil
	}

	ps := c.cfg.Redis.Subscribe(ctx, c.cfg.Channel) // connection errors are retried by ps
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	retry := time.NewTicker(c.cfg.RetryInterval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			c.finalRetry(ctx)
			return nil
		case <-c.done:
			return nil
		case <-retry.C:
			c.retryPending(ctx)
		case m, ok := <-msgs:
			if !ok {
				return errors.New("cache run: invalidation subscription closed")
			}
			switch m := m.(type) {
			case *redis.Message:
				c.evict(m.Payload)
			case *redis.Subscription:
				if m.Kind != "subscribe" || m.Channel != c.cfg.Channel {
					continue
				}
				c.purge()
				if n := c.subscriptions.Add(1); n == 1 {
					c.log.Info("subscribed to cache invalidations", "channel", c.cfg.Channel)
				} else {
					c.log.Warn("resubscribed to cache invalidations; cleared the LRU", "channel", c.cfg.Channel,
						"subscriptions", n)
				}
				c.retryPending(ctx)
			}
		}
	}
}

// finalRetry makes one last attempt, bounded by finalRetryTimeout, at the
// invalidations Redis failed, as Run stops at shutdown: dropped, they would
// let other instances serve a deleted or changed link until their LRU TTL
// passes. What is still pending after it is logged and dropped. (Run does
// not try after Close: the client may be closed by then.)
func (c *Cache) finalRetry(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalRetryTimeout)
	defer cancel()
	c.retryPending(ctx)
	c.pendingMu.Lock()
	left := len(c.pending)
	c.pendingMu.Unlock()
	if left > 0 {
		c.log.Error("failed invalidations dropped at exit; other instances may serve these codes until their LRU TTL passes",
			"left", left)
	}
}
