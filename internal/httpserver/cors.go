package httpserver

import (
	"net/http"
	"net/url"

	"github.com/gofiber/fiber/v2"
	"github.com/rs/cors"
)

// corsExposed are the response headers browser code may read.
var corsExposed = []string{"Location", "ETag", "RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-ID"}

// newCORS bridges rs/cors to Fiber for the API routes. rs/cors decides (origin
// list, preflight, Vary, max-age); the bridge only carries the few request
// headers it reads into a minimal *http.Request and copies the headers it
// writes back. Requests without Origin skip it entirely, so non-browser
// clients pay nothing. Credentials are off: the API authenticates with bearer
// keys, never cookies.
func newCORS(origins []string) fiber.Handler {
	c := cors.New(cors.Options{
		AllowedOrigins:       origins,
		AllowedMethods:       []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete},
		AllowedHeaders:       []string{"Authorization", "Content-Type", "If-None-Match", "If-Match", "X-Request-ID"},
		ExposedHeaders:       corsExposed,
		MaxAge:               600,
		AllowCredentials:     false,
		OptionsSuccessStatus: http.StatusNoContent,
	})
	return func(ctx *fiber.Ctx) error {
		origin := ctx.Get(fiber.HeaderOrigin)
		if origin == "" {
			return ctx.Next()
		}
		r := &http.Request{Method: ctx.Method(), URL: &url.URL{Path: ctx.Path()}, Header: http.Header{}}
		r.Header.Set(fiber.HeaderOrigin, origin)
		preflight := ctx.Method() == fiber.MethodOptions && ctx.Get(fiber.HeaderAccessControlRequestMethod) != ""
		if preflight {
			r.Header.Set(fiber.HeaderAccessControlRequestMethod, ctx.Get(fiber.HeaderAccessControlRequestMethod))
			if h := ctx.Get(fiber.HeaderAccessControlRequestHeaders); h != "" {
				r.Header.Set(fiber.HeaderAccessControlRequestHeaders, h)
			}
		}
		w := &headerRecorder{header: http.Header{}, status: http.StatusOK}
		c.HandlerFunc(w, r)
		for k, vs := range w.header {
			for _, v := range vs {
				if k == fiber.HeaderVary {
					ctx.Vary(v)
				} else {
					ctx.Response().Header.Add(k, v)
				}
			}
		}
		if preflight {
			ctx.Set(fiber.HeaderCacheControl, "no-store")
			return ctx.SendStatus(w.status)
		}
		return ctx.Next()
	}
}

// headerRecorder is the http.ResponseWriter rs/cors writes into.
type headerRecorder struct {
	header http.Header
	status int
}

func (w *headerRecorder) Header() http.Header         { return w.header }
func (w *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerRecorder) WriteHeader(status int)      { w.status = status }
