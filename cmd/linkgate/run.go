package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/apikeys"
	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/clicks"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/deadline"
	"github.com/linkgate/linkgate/internal/handlers"
	"github.com/linkgate/linkgate/internal/health"
	"github.com/linkgate/linkgate/internal/httpserver"
	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/metrics"
	"github.com/linkgate/linkgate/internal/quiesce"
	"github.com/linkgate/linkgate/internal/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Run is the whole program: it parses settings from args and the environment,
// wires every part by hand, serves until ctx is done or SIGINT/SIGTERM arrives,
// then shuts down in order and returns. "keys create" is a subcommand.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "keys":
			return runKeys(ctx, args[1:], stdout, stderr)
		case "probe":
			return runProbe(ctx, args[1:])
		}
	}
	cfg, err := config.Load(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	w, err := wire(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	defer w.close()
	app, logs, logger, probes, counter, resolver := w.app, w.logs, w.logger, w.probes, w.counter, w.resolver

	tcpLn, err := quiesce.ListenTCP(ctx, cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	// Closed by the drain below once every connection the kernel completed
	// has been accepted, so that none is reset with a request on it.
	ln := quiesce.New(tcpLn, quiesce.DefaultMaxWait)

	// Background workers stop when workCtx is cancelled, after the HTTP server
	// has drained, so that every click counted by a finished request is flushed
	// and invalidations Redis failed get a last try.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var workers sync.WaitGroup
	workers.Add(3)
	go func() { defer workers.Done(); _ = logs.Run(workCtx) }()
	go func() { defer workers.Done(); _ = counter.Run(workCtx) }()
	go func() { defer workers.Done(); _ = resolver.Run(workCtx) }() // cross-instance invalidations

	// Each connection's deadlines reach its socket only when a read or
	// write could wait on them, and may fire up to a tenth of the shortest
	// timeout early (package deadline).
	slack := min(cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout) / 10
	serveErr := make(chan error, 1)
	go func() { serveErr <- app.Listener(deadline.Listener(ln, slack)) }()
	probes.MarkReady()
	logger.Info("linkgate started", "version", version, "addr", ln.Addr().String(), "base_url", cfg.BaseURL.String())

	var runErr error
	select {
	case <-ctx.Done():
		stop()         // a second SIGINT/SIGTERM now kills the process at once
		probes.Drain() // /ready answers 503 from now on
		logger.Info("shutting down", "delay", cfg.ShutdownDelay.String(), "drain_timeout", cfg.DrainTimeout.String(),
			"open_connections", app.Server().GetOpenConnectionsCount())
		if cfg.ShutdownDelay > 0 {
			// Keep serving while load balancers notice we are going away.
			t := time.NewTimer(cfg.ShutdownDelay)
			<-t.C
		}
		// Every response since Drain said Connection: close, so a connection
		// still open now is one a client (a proxy's keep-alive pool) has
		// left idle for the whole delay, or one with a request running. The
		// drain below closes the idle ones, racing any request the client
		// sends on one at that moment: a proxy whose idle timeout is shorter
		// than the delay (nginx.conf's upstream keepalive_timeout) has closed
		// them all itself by now.
		logger.Info("shutdown delay over; draining", "open_connections", app.Server().GetOpenConnectionsCount(),
			"running", w.inflight.Running())
		drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
		err := app.ShutdownWithContext(drainCtx)
		// From here on a request reaching the handlers (a connection still
		// reading one when the drain timed out) is refused with 503.
		w.inflight.Stop()
		if err != nil {
			// Requests still running count clicks and use the store, which
			// are flushed and closed next: give them up to the store timeout
			// (the longest a handler waits on one call) to end.
			logger.Warn("drain incomplete; waiting for running requests", "err", err,
				"running", w.inflight.Running(), "grace", cfg.StoreTimeout.String())
			if n := awaitRequests(w.inflight, cfg.StoreTimeout); n > 0 {
				logger.Error("stopping with requests still running; their clicks may be lost", "running", n)
			}
		}
		cancel()
		if q := ln.Result(); q.Queued >= 0 {
			logger.Info("listener closed", "queued", q.Queued, "left", q.Left, "waited", q.Waited.String(), "fenced", q.Fenced)
		}
		// fasthttp's shutdown does nothing if Serve has not registered the
		// listener yet (a signal during start-up); closing the socket ends
		// Serve either way. (The inner one: with no accept loop running,
		// quiesce's close would wait for nothing.)
		_ = tcpLn.Close()
		<-serveErr
	case runErr = <-serveErr:
		runErr = fmt.Errorf("serve: %w", runErr)
	}

	stopWork()
	workers.Wait() // final click flush
	// Deferred: w.close (limiter, cache, Redis, store, in reverse), then the
	// log flush.
	logger.Info("linkgate stopped")
	return runErr
}

// awaitRequests waits until no request is in the handlers, at most grace,
// and returns the number still running.
func awaitRequests(inflight *httpserver.Inflight, grace time.Duration) int64 {
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := inflight.Running()
		if n == 0 || !time.Now().Before(deadline) {
			return n
		}
		<-tick.C
	}
}

// wired is every part Run assembles, before anything serves or runs in the
// background: the app and the parts Run's serve loop and shutdown need.
type wired struct {
	app      *fiber.App
	logs     *logsink.Sink
	logger   *slog.Logger
	probes   *health.Health
	counter  *clicks.Counter
	resolver *cache.Cache
	inflight *httpserver.Inflight // requests in the handlers
	closers  []func()             // in the order opened; close runs them in reverse
}

// close releases what wire opened (limiter, cache, Redis, store), in reverse
// order, then flushes the log sink. The background workers (Run starts them)
// must have stopped.
func (w *wired) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
	w.logs.Flush()
}

// wire builds every part from cfg, by hand, in dependency order: log sink,
// metrics, store, Redis, cache, click counter, service, handlers, probes,
// limiter, app. Log lines go to stdout through one buffered sink (see
// internal/logsink for what SIGKILL can lose). On error, what was opened is
// closed again.
func wire(ctx context.Context, cfg *config.Config, stdout io.Writer) (*wired, error) {
	logs := logsink.New(stdout, 0, 0) // flushed every 100 ms once Run starts it, and by close
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	w := &wired{logs: logs, logger: logger}
	ok := false
	defer func() {
		if !ok {
			w.close()
		}
	}()

	m, err := metrics.New(metrics.Config{Version: version, Logger: logger})
	if err != nil {
		return nil, err
	}
	rawStore, err := store.Open(ctx, cfg.DatabaseURL, store.Options{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	w.closers = append(w.closers, func() { rawStore.Close() })
	// Every call is bounded (a stuck database answers 503, not a hung
	// request), and the metrics time it including the bound.
	st := metrics.InstrumentStore(store.Bound(rawStore, cfg.StoreTimeout), m)
	if cfg.AdminKey != "" {
		if err := apikeys.Bootstrap(ctx, st, cfg.AdminKey); err != nil {
			return nil, err
		}
	}

	// go-redis logs through a package-level logger; this is its only setter.
	redis.SetLogger(redisLogger{logger})
	rdb, err := openRedis(cfg.RedisURL, cfg.RedisTimeout)
	if err != nil {
		return nil, err
	}
	if rdb != nil {
		w.closers = append(w.closers, func() { rdb.Close() })
	}
	resolver, err := cache.New(cache.Config{
		Source:       st,
		Redis:        rdb, // nil without LINKGATE_REDIS_URL: the cache runs LRU only
		LRUSize:      cfg.CacheSize,
		LRUTTL:       cfg.CacheTTL,
		RedisTTL:     cfg.RedisCacheTTL,
		NegativeTTL:  cfg.NegativeTTL,
		RedisTimeout: cfg.RedisTimeout,
		Recorder:     m,
		Logger:       logger,
	})
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, func() { resolver.Close() })
	if err := m.SetCacheEntries(metrics.EntriesLRU, resolver.Len); err != nil {
		return nil, err
	}
	if err := m.SetCacheEntries(metrics.EntriesLRUNegative, resolver.NegativeLen); err != nil {
		return nil, err
	}

	counter, err := clicks.New(clicks.Config{Sink: st, Interval: cfg.ClickFlush, Logger: logger})
	if err != nil {
		return nil, err
	}
	svc, err := links.NewService(links.ServiceConfig{
		Store:       st,
		Resolver:    resolver,
		Invalidator: resolver,
		URLs:        links.URLPolicy{OwnHosts: cfg.OwnHosts()},
		Logger:      logger,
	})
	if err != nil {
		return nil, err
	}
	// Key rows are reused for 5s: a rotated LINKGATE_ADMIN_KEY is honoured
	// by every instance within that (apikeys package doc).
	auth, err := apikeys.NewAuthenticator(st, apikeys.Config{})
	if err != nil {
		return nil, err
	}
	h, err := handlers.New(handlers.Config{
		Links:          svc,
		Clicks:         counter,
		Auth:           auth,
		BaseURL:        cfg.BaseURL.String(),
		PublicCreate:   cfg.PublicCreate,
		RedirectMaxAge: cfg.RedirectMaxAge,
		Metrics:        m,
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}
	checks := []health.Check{{Name: "store", ComponentType: "datastore", Critical: true, Probe: st.Ping}}
	if rdb != nil {
		// Not critical: redirects and the limiter fail open without Redis.
		checks = append(checks, health.Check{Name: "redis", ComponentType: "datastore",
			Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	}
	probes, err := health.New(health.Config{Version: version, Checks: checks})
	if err != nil {
		return nil, err
	}
	limits, closeLimits, err := newLimits(cfg, m, logger, h.UnvouchedKey)
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, closeLimits)
	inflight := new(httpserver.Inflight)
	app, err := httpserver.New(httpserver.Config{
		Handlers:       h,
		Health:         probes,
		Registry:       m.Registry(),
		MetricsHandler: m.Handler(),
		Logger:         logger,
		AccessLog:      logs,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		TrustedProxies: cfg.TrustedProxies,
		CORSOrigins:    cfg.CORSOrigins,
		Limits:         limits,
		Inflight:       inflight,
	})
	if err != nil {
		return nil, err
	}
	w.app, w.probes, w.counter, w.resolver, w.inflight = app, probes, counter, resolver, inflight
	ok = true
	return w, nil
}

// runKeys implements "linkgate keys create --name NAME [--admin=BOOL]".
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New(`usage: linkgate keys create --name NAME [--admin=true]`)
	}
	fs := flag.NewFlagSet("linkgate keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "what the key is for (required)")
	admin := fs.Bool("admin", true, "whether the key may list and delete links")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *name == "" {
		return errors.New("keys create: --name is required")
	}
	cfg, err := config.Load(nil, os.Getenv, stderr)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	token, err := apikeys.Create(ctx, st, *name, *admin)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	fmt.Fprintln(stderr, "This key is shown once; it is stored only as a hash.")
	return nil
}

// runProbe implements "linkgate probe URL": GET the URL and succeed on a 2xx
// answer within 2 s. It is the container health check (the image has no shell
// or curl).
func runProbe(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: linkgate probe URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe: %s answered %d", args[0], resp.StatusCode)
	}
	return nil
}

// openRedis returns a client for url, or nil when url is empty. Every call
// made with a context is bounded by that context (the request path sets
// timeout); the client never retries, dials and waits for a pooled
// connection only briefly, so a dead Redis costs milliseconds, not seconds.
func openRedis(url string, timeout time.Duration) (*redis.Client, error) {
	if url == "" {
		return nil, nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("LINKGATE_REDIS_URL: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = -1   // no retries: callers fall back instead
	opt.DialerRetries = 1 // one dial attempt (go-redis defaults to 5, 100 ms apart)
	opt.DialTimeout = max(4*timeout, 200*time.Millisecond)
	opt.ReadTimeout = max(4*timeout, 200*time.Millisecond)
	opt.WriteTimeout = opt.ReadTimeout
	opt.PoolTimeout = max(2*timeout, 100*time.Millisecond)
	return redis.NewClient(opt), nil
}
