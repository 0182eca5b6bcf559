package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clientip"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/handlers"
	"github.com/linkgate/linkgate/internal/httpserver"
	"github.com/linkgate/linkgate/internal/metrics"
	"github.com/linkgate/linkgate/internal/ratelimit"
)

// newLimits builds the rate-limit middleware of the three policies, and the
// limit on API key lookups that shares the API policy's numbers. With
// Redis: the exact shared token bucket (batched round trips) behind a circuit
// breaker with a local fallback; create and api are fronted by a cache of
// denials, redirect by a leaser that takes tokens from the same buckets in
// small batches. Without Redis: an in-process bucket with the same semantics.
// The returned close function stops the workers and the Redis client.
func newLimits(cfg *config.Config, rec ratelimit.Recorder, logger *slog.Logger, unvouched func(*fiber.Ctx) bool) (httpserver.Limits, func(), error) {
	// decider serves create and api exactly; redirectDecider may lease.
	var decider, redirectDecider ratelimit.Decider
	closeAll := func() {}
	if cfg.RedisURL == "" {
		decider = ratelimit.NewLocalLimiter(ratelimit.LocalConfig{})
		redirectDecider = decider
	} else {
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return httpserver.Limits{}, nil, fmt.Errorf("LINKGATE_REDIS_URL: %w", err)
		}
		// Its own client: the script must never be retried (it could take
		// a token twice), and its pool must not queue behind cache traffic.
		client := redis.NewClient(ratelimit.LimiterOptions(opt, cfg.RedisTimeout))
		batcher, err := ratelimit.NewBatcher(ratelimit.BatcherConfig{Client: client, Timeout: cfg.RedisTimeout})
		if err != nil {
			client.Close()
			return httpserver.Limits{}, nil, err
		}
		fallback, err := ratelimit.NewFallback(ratelimit.FallbackConfig{
			Primary: batcher, Instances: cfg.Instances, Timeout: cfg.RedisTimeout, Logger: logger, Recorder: rec,
		})
		if err == nil {
			// Outside the Fallback, so that the breaker's probes reach Redis.
			decider, err = ratelimit.NewOverLimitCache(ratelimit.OverLimitConfig{Next: fallback})
		}
		if err == nil {
			// Redirects take batches of tokens from the same exact buckets and
			// spend them in-process. Over any window a key may get at most
			// min(Instances×(Size-1), rate×MaxAge) more than the exact
			// bucket would grant (internal/ratelimit's package doc); for the
			// default 1200/1m policy, 20 tokens. Size is redirectLeaseSize:
			// 64, or 100 ms of the policy's rate for policies faster than
			// 640/s. Create and api stay exact.
			redirectDecider, err = ratelimit.NewLeaser(ratelimit.LeaseConfig{Next: fallback, Size: redirectLeaseSize(cfg.RateRedirect)})
		}
		if err != nil {
			batcher.Close()
			client.Close()
			return httpserver.Limits{}, nil, err
		}
		closeAll = func() { batcher.Close(); client.Close() }
	}
	ips := clientip.New(cfg.TrustedProxies)
	key := ratelimit.KeyByAPIKeyOrIP(handlers.APIKeyID, ips)
	mw := func(p ratelimit.Policy, d ratelimit.Decider) (fiber.Handler, error) {
		return ratelimit.New(ratelimit.Config{Policy: p, Decider: d, KeyFunc: key, Timeout: cfg.RedisTimeout, Recorder: rec})
	}
	var l httpserver.Limits
	var err error
	if l.Redirect, err = mw(cfg.RateRedirect, redirectDecider); err == nil {
		if l.Create, err = mw(cfg.RateCreate, decider); err == nil {
			if l.API, err = mw(cfg.RateAPI, decider); err == nil {
				l.KeyLookup, err = keyLookupLimit(cfg, decider, rec, ips, unvouched)
			}
		}
	}
	if err != nil {
		closeAll()
		return httpserver.Limits{}, nil, err
	}
	return l, closeAll, nil
}

// keyLookupLimit is httpserver.Limits.KeyLookup: the api policy's numbers
// under the name "keylookup", in buckets of their own keyed by client
// network (an IPv4 address, an IPv6 /64), charged before authentication for
// each request whose key the store must be asked about without being known
// to exist (unvouched, see Handlers.UnvouchedKey). Made-up keys get as many
// store reads as the policy allows requests, then 429 before the store. A
// real key is charged when first seen, not again while the authenticator
// remembers it; requests sharing a read in flight are not charged. Nil when
// the api policy is off.
func keyLookupLimit(cfg *config.Config, d ratelimit.Decider, rec ratelimit.Recorder, ips clientip.Source, unvouched func(*fiber.Ctx) bool) (fiber.Handler, error) {
	if cfg.RateAPI.Disabled {
		return nil, nil
	}
	p := cfg.RateAPI
	p.Name = metrics.PolicyKeyLookup
	network := func(c *fiber.Ctx) string {
		var buf [64]byte
		return string(ips.AppendNetwork(append(buf[:0], "net:"...), c))
	}
	return ratelimit.New(ratelimit.Config{Policy: p, Decider: d, KeyFunc: network, Timeout: cfg.RedisTimeout, Recorder: rec,
		Next: func(c *fiber.Ctx) bool { return !unvouched(c) }})
}

// redirectLeaseSize is the most tokens the redirect leaser takes at once
// for policy p: what p refills in 100 ms, at least 64 and at most 1,024. So a
// lease never adds more than 100 ms of p's rate per instance to the bound
// above beyond the 63 tokens every policy gets. The floor keeps a hot client
// of a slow policy at one Redis call per 64 redirects (64 measured ~10% more
// throughput than 16 with one client at 64 connections); the rate share
// lets a client of a fast policy go further between calls: with one client
// and a 100000000/1s policy under wrk, 64 cost one EVALSHA per ~47
// redirects and 0.72x the throughput of the limiter-off stack, 1,024 one per
// ~700 and on a par with it (4,096 gave no more).
func redirectLeaseSize(p ratelimit.Policy) int64 {
	const minSize, maxSize, share = 64, 1024, 100 * time.Millisecond
	if p.Disabled || p.Period <= 0 {
		return minSize
	}
	perShare := float64(p.Limit) * float64(share) / float64(p.Period)
	return int64(max(minSize, min(maxSize, perShare)))
}

// redisLogger sends go-redis's internal messages (one per failed dial while
// Redis is down) to slog at debug level; the limiter and the cache already
// log each outage once.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}
