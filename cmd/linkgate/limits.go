package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/handlers"
	"github.com/linkgate/linkgate/internal/httpserver"
	"github.com/linkgate/linkgate/internal/ratelimit"
)

// newLimits builds the rate-limit middleware of the three policies. With
// Redis: the exact shared token bucket (batched round trips) behind a circuit
// breaker with a local fallback; create and api are fronted by a cache of
// denials, redirect by a leaser that takes tokens from the same buckets in
// small batches. Without Redis: an in-process bucket with the same semantics.
// The returned close function stops the workers and the Redis client.
func newLimits(cfg *config.Config, rec ratelimit.Recorder, logger *slog.Logger) (httpserver.Limits, func(), error) {
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
			// bucket would grant (internal/ratelimit's package doc): never
			// more than one MaxAge (1 s) of the policy's rate, whatever Size
			// is; for the default 1200/1m policy, 20 tokens. Size only caps
			// policies faster than Size-1 tokens per MaxAge, so it is set for
			// hot keys: with one client at 64 connections, 64 cost one Redis
			// call per ~47 redirects and ran at 0.7x the limiter-off stack;
			// 1024, one call per ~700 and on a par with it (measured under
			// wrk on loopback, 2 cores).
			// Create and api stay exact.
			redirectDecider, err = ratelimit.NewLeaser(ratelimit.LeaseConfig{Next: fallback, Size: redirectLeaseSize})
		}
		if err != nil {
			batcher.Close()
			client.Close()
			return httpserver.Limits{}, nil, err
		}
		closeAll = func() { batcher.Close(); client.Close() }
	}
	key := ratelimit.KeyByAPIKeyOrIP(handlers.APIKeyID)
	mw := func(p ratelimit.Policy, d ratelimit.Decider) (fiber.Handler, error) {
		return ratelimit.New(ratelimit.Config{Policy: p, Decider: d, KeyFunc: key, Timeout: cfg.RedisTimeout, Recorder: rec})
	}
	var l httpserver.Limits
	var err error
	if l.Redirect, err = mw(cfg.RateRedirect, redirectDecider); err == nil {
		if l.Create, err = mw(cfg.RateCreate, decider); err == nil {
			l.API, err = mw(cfg.RateAPI, decider)
		}
	}
	if err != nil {
		closeAll()
		return httpserver.Limits{}, nil, err
	}
	return l, closeAll, nil
}

// redirectLeaseSize is the most tokens the redirect leaser takes at once.
const redirectLeaseSize = 1024

// redisLogger sends go-redis's internal messages (one per failed dial while
// Redis is down) to slog at debug level; the limiter and the cache already
// log each outage once.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}
