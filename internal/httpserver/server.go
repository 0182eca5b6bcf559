// Package httpserver assembles linkgate's Fiber app: server settings
// (timeouts, body limit, trusted proxies), the middleware order, and the
// routes. It is the one place that says which middleware runs where.
//
// Order, outermost first: unknown-method guard (fasthttp level) → request ID
// and access log → Connection: close while draining and the in-flight
// count → the probe routes and
// /metrics (which end the chain) → HTTP metrics → error rendering (so the
// metrics and the log see the status sent) → panic recovery → routes. The API
// group runs CORS (only for requests with Origin) and then authentication;
// the redirect route is last, so that fixed paths win over /:code.
package httpserver

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/ansrivas/fiberprometheus/v2"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/clientip"
	"github.com/linkgate/linkgate/internal/handlers"
	"github.com/linkgate/linkgate/internal/health"
	"github.com/linkgate/linkgate/internal/links"
)

// Config configures the app.
type Config struct {
	// Handlers serves the routes. Required.
	Handlers *handlers.Handlers
	// Health serves /live, /ready and /health. Required.
	Health *health.Health
	// Registry receives the HTTP RED metrics (fiberprometheus). Required.
	Registry *prometheus.Registry
	// MetricsHandler serves /metrics. Required.
	MetricsHandler fiber.Handler
	// Logger decides the log level (access lines are written at Info, 5xx at
	// Error). Default: discard.
	Logger *slog.Logger
	// AccessLog receives one JSON line per request, when Logger enables it.
	// Default: none.
	AccessLog io.Writer
	// ReadTimeout, WriteTimeout, IdleTimeout bound each connection (Fiber's
	// defaults are unlimited). Defaults 10s, 10s, 75s.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// TrustedProxies are IPs/CIDRs whose X-Real-IP header names the client.
	// Empty: the socket peer is the client, whatever headers say.
	TrustedProxies []string
	// CORSOrigins may call the API from browsers. Empty: no CORS headers.
	CORSOrigins []string
	// Limits are the rate-limit middleware per route class; nil means none.
	Limits Limits
	// Inflight, when set, counts the requests in the handlers (all but the
	// unknown-method guard's answers).
	Inflight *Inflight
}

// Limits holds one rate-limit middleware per route class.
type Limits struct {
	Redirect fiber.Handler // GET/HEAD /{code}
	Create   fiber.Handler // POST /api/v1/links, POST /encurtar
	API      fiber.Handler // every other API route
	// KeyLookup runs just before authentication on the API and form routes:
	// it bounds the store reads that made-up API keys cause (a limiter that
	// skips all but Handlers.UnvouchedKey requests).
	KeyLookup fiber.Handler
}

func (c *Config) defaults() error {
	if c.Handlers == nil || c.Health == nil || c.Registry == nil || c.MetricsHandler == nil {
		return fmt.Errorf("httpserver: Handlers, Health, Registry and MetricsHandler are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 75 * time.Second
	}
	return nil
}

// New returns the assembled app; serve it with app.Listener and stop it with
// app.ShutdownWithContext.
func New(cfg Config) (*fiber.App, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	h := cfg.Handlers
	fc := fiberConfig(cfg, h.ErrorHandler)
	app := fiber.New(fc)
	// Idle keep-alive connections must not hold up shutdown.
	app.Server().CloseOnShutdown = true
	guardUnknownMethods(app)

	app.Use(requestLog(newAccessLog(cfg.AccessLog, cfg.Logger), clientip.New(cfg.TrustedProxies), h.ErrorHandler))
	app.Use(closeWhileDraining(cfg.Health, cfg.Inflight))

	// Probes and /metrics first: nothing after this point (limits, auth) may
	// refuse them, and they stay out of the HTTP metrics. (fiberprometheus's
	// own skip paths would turn their errors into empty 200s.)
	app.Get("/live", cfg.Health.Live)
	app.Get("/ready", cfg.Health.Ready)
	app.Get("/health", cfg.Health.Health)
	app.Get("/metrics", cfg.MetricsHandler)

	// HTTP RED metrics labelled by route template. Errors are rendered just
	// inside it, so it records the status sent (fiberprometheus would count any
	// error that is not a *fiber.Error as 500).
	app.Use(HTTPMetrics(cfg.Registry))
	app.Use(renderErrors(h.ErrorHandler))
	app.Use(recover.New())

	// Store reads for keys not known to exist are rationed per client.
	authenticate := chain(cfg.Limits.KeyLookup, h.Authenticate)
	apiChain := slices.Clone(authenticate)
	if len(cfg.CORSOrigins) > 0 {
		apiChain = append([]fiber.Handler{newCORS(cfg.CORSOrigins)}, apiChain...)
	}
	// Each route: its limit (keyed by API key ID or client IP), then the
	// refusal of bad keys, then authorisation, then the handler.
	lim := cfg.Limits
	api := app.Group("/api/v1", apiChain...)
	api.Post("/links", chain(lim.Create, h.CheckAuth, h.CreateLink)...)
	api.Get("/links", chain(lim.API, h.CheckAuth, h.RequireAdmin, h.ListLinks)...)
	api.Get("/links/:code", chain(lim.API, h.CheckAuth, h.GetLink)...)
	api.Delete("/links/:code", chain(lim.API, h.CheckAuth, h.RequireAdmin, h.DeleteLink)...)

	app.Post("/encurtar", chain(slices.Concat(authenticate, []fiber.Handler{lim.Create, h.CheckAuth, h.SeedCreate})...)...)
	app.Get("/api/links", chain(slices.Concat(authenticate, []fiber.Handler{lim.API, h.CheckAuth, h.RequireAdmin, h.SeedList})...)...)

	app.Get("/:code", chain(lim.Redirect, h.Redirect)...) // Fiber serves HEAD through GET routes
	return app, nil
}

// HTTPMetrics returns the middleware recording linkgate's HTTP RED metrics
// (fiberprometheus: http_requests_total, http_request_duration_seconds and
// http_requests_in_progress_total, labelled service="linkgate") on reg. New
// places it outside the error rendering; the benchmark's baseline-metrics
// server uses it too, so that it measures exactly this registration.
func HTTPMetrics(reg prometheus.Registerer) fiber.Handler {
	return fiberprometheus.NewWithRegistry(reg, "linkgate", "http", "", nil).Middleware
}

// fiberConfig is the Fiber configuration of New's app. The proxy header is
// set exactly when there are trusted proxies, as clientip.Source assumes.
func fiberConfig(cfg Config, errorHandler fiber.ErrorHandler) fiber.Config {
	fc := fiber.Config{
		AppName:               "linkgate",
		ErrorHandler:          errorHandler,
		BodyLimit:             handlers.MaxBodyBytes,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		ReadBufferSize:        8192, // request line + headers; larger gets 431
		CaseSensitive:         true, // short codes are case-sensitive
		DisableStartupMessage: true,
		Network:               "tcp",
		EnableIPValidation:    true,
	}
	if len(cfg.TrustedProxies) > 0 {
		fc.EnableTrustedProxyCheck = true
		fc.TrustedProxies = cfg.TrustedProxies
		fc.ProxyHeader = clientip.ProxyHeader // nginx overwrites it with $remote_addr
	}
	return fc
}

// chain returns the non-nil handlers, in order.
func chain(hs ...fiber.Handler) []fiber.Handler {
	out := make([]fiber.Handler, 0, len(hs))
	for _, h := range hs {
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}

// guardUnknownMethods answers methods Fiber does not know (e.g. "FOO") with a
// 405 problem instead of Fiber's plain-text 400 that skips the error handler.
func guardUnknownMethods(app *fiber.App) {
	known := make(map[string]struct{}, len(fiber.DefaultMethods))
	for _, m := range fiber.DefaultMethods {
		known[m] = struct{}{}
	}
	next := app.Server().Handler
	app.Server().Handler = func(rc *fasthttp.RequestCtx) {
		if _, ok := known[string(rc.Method())]; ok {
			next(rc)
			return
		}
		rc.Response.Header.Set(fiber.HeaderAllow, "GET, HEAD, POST, DELETE, OPTIONS")
		rc.Response.Header.Set(fiber.HeaderCacheControl, "no-store")
		rc.SetStatusCode(fiber.StatusMethodNotAllowed)
		rc.SetContentType("application/problem+json")
		rc.SetBodyString(`{"type":"urn:linkgate:problem:method-not-allowed","title":"Method not allowed.","status":405,"detail":"Unknown HTTP method."}`)
	}
}

// closeWhileDraining answers with Connection: close once shutdown has begun,
// so that proxies stop reusing connections to this instance during the
// shutdown delay and none is mid-request when the listener closes. It
// checks when the handlers have returned, so a request that began before
// the drain closes its connection too (fasthttp's own close on shutdown
// only holds until its drain timeout passes).
//
// It also counts the requests it runs in inflight (a fresh Inflight when
// nil), and refuses them with 503 once inflight is stopped. The count comes
// before the check, so a request that passes the check is always counted.
func closeWhileDraining(h *health.Health, inflight *Inflight) fiber.Handler {
	if inflight == nil {
		inflight = new(Inflight)
	}
	return func(c *fiber.Ctx) error {
		n := inflight.stripe(c.Context().ConnID())
		n.Add(1)
		defer n.Add(-1)
		if inflight.stopped.Load() {
			c.Context().SetConnectionClose()
			return links.Errorf(links.EUNAVAILABLE, "The server is shutting down.")
		}
		err := c.Next()
		if h.Draining() {
			c.Context().SetConnectionClose()
		}
		return err
	}
}

// renderErrors turns an error from the handlers inside it into its response
// at once, so that middleware outside sees the final status.
func renderErrors(errorHandler fiber.ErrorHandler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if err := c.Next(); err != nil {
			return errorHandler(c, err)
		}
		return nil
	}
}
