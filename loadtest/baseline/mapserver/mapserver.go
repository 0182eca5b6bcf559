// Package mapserver is the baseline of linkgate's benchmarks: the smallest
// Fiber v2 app that does linkgate's job. GET /:code answers 302 with the
// Location read from a Go map; unknown codes answer 404. The baseline command
// (loadtest/baseline) serves it over TCP for `make bench`, and cmd/linkgate's
// BenchmarkStack drives its handler in-process, so both measure the same app.
// NewWithWork adds a fixed amount of CPU per request, for the budget phase of
// `make bench`: how much work a server may add before it falls below a ratio.
package mapserver

import (
	"time"

	"github.com/gofiber/fiber/v2"
)

// New returns the app answering from urls (code → URL), which it reads but
// never changes.
func New(urls map[string]string) *fiber.App {
	app, _ := NewWithWork(urls, 0) // no work: nothing to calibrate, no error
	return app
}

// NewWithWork is New with about work of pure CPU added to every request, in
// a middleware before the route (see busyWork); zero adds nothing, not even
// the middleware. The error is a failed calibration of the work.
func NewWithWork(urls map[string]string, work time.Duration) (*fiber.App, error) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	if work > 0 {
		h, err := busyWork(work)
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
