// Package mapserver is the baseline of linkgate's benchmarks: the smallest
// Fiber v2 app that does linkgate's job. GET /:code answers 302 with the
// Location read from a Go map; unknown codes answer 404. The baseline command
// (loadtest/baseline) serves it over TCP for `make bench`, and cmd/linkgate's
// BenchmarkStack drives its handler in-process, so both measure the same app.
// Options add to it, each in a middleware before the route: a fixed amount
// of CPU per request, for the budget phase of `make bench` (how much work a
// server may add before it falls below a ratio), or the HTTP metrics
// linkgate is required to use, registered as linkgate registers them (what
// the metrics library alone costs, beside linkgate's own numbers).
package mapserver

import (
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/internal/httpserver"
)

// New returns the app answering from urls (code → URL), which it reads but
// never changes.
func New(urls map[string]string) *fiber.App {
	app, _ := NewWith(urls, Options{}) // no work: nothing to calibrate, no error
	return app
}

// Options are what NewWith adds to the baseline; the zero value adds
// nothing, not even a middleware.
type Options struct {
	// Work is about how much pure CPU to add to every request (see busyWork).
	Work time.Duration
	// Metrics, when set, receives linkgate's HTTP metrics, from the
	// middleware linkgate itself uses (httpserver.HTTPMetrics), placed
	// before the route.
	Metrics prometheus.Registerer
}

// NewWith is New with o's additions, metrics outermost. The error is a
// failed calibration of the work.
func NewWith(urls map[string]string, o Options) (*fiber.App, error) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	if o.Metrics != nil {
		app.Use(httpserver.HTTPMetrics(o.Metrics))
	}
	if o.Work > 0 {
		h, err := busyWork(o.Work)
		if err != nil {
			return nil, err
		}
		app.Use(h)
	}
	app.Get("/:code", func(c *fiber.Ctx) error {
		url, ok := urls[c.Params("code")]
		if !ok {
			return c.SendStatus(fiber.StatusNotFound)
		}
		c.Set(fiber.HeaderLocation, url)
		return c.SendStatus(fiber.StatusFound)
	})
	return app, nil
}
