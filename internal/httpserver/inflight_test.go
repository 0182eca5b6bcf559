package httpserver

import (
	"fmt"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/health"
	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/testenv"
)

// TestInflightAndCloseWhileDraining: a request counts as running while it
// is in the handlers and not after; a request that began before the drain
// and ends after it closes its keep-alive connection; after Stop a request
// is refused with 503 and Connection: close without reaching the handler.
func TestInflightAndCloseWhileDraining(t *testing.T) {
	h, err := health.New(health.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var inflight Inflight
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: func(c *fiber.Ctx, err error) error {
		if links.ErrorCode(err) == links.EUNAVAILABLE {
			return c.SendStatus(fiber.StatusServiceUnavailable)
		}
		return fiber.DefaultErrorHandler(c, err)
	}})
	app.Use(closeWhileDraining(h, &inflight))
	app.Get("/block", func(c *fiber.Ctx) error {
		entered <- struct{}{}
		<-release
		return c.SendString("done")
	})
	addr := serve(t, app)

	conn, br := dial(t, addr)
	fmt.Fprint(conn, "GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
	<-entered
	if n := inflight.Running(); n != 1 {
		t.Fatalf("one request in the handler: Running() = %d", n)
	}
	h.Drain()
	close(release)
	resp := readResponse(t, br)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request that began before the drain: %d, Connection %q; want 200 with Connection: close",
			resp.StatusCode, resp.Header.Get("Connection"))
	}
	testenv.WaitFor(t, 5*time.Second, "no request running", func() bool { return inflight.Running() == 0 })

	inflight.Stop()
	conn2, br2 := dial(t, addr)
	fmt.Fprint(conn2, "GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
	resp = readResponse(t, br2)
	if resp.StatusCode != fiber.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("request after Stop: %d, Connection %q; want 503 with Connection: close", resp.StatusCode, resp.Header.Get("Connection"))
	}
	select {
	case <-entered:
		t.Fatal("the handler ran after Stop")
	default:
	}
	if n := inflight.Running(); n != 0 {
		t.Fatalf("after the refused request: Running() = %d", n)
	}
}
