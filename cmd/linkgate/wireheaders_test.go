package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// TestRedirectWireHeaders: a redirect's Location, Cache-Control and
// X-Request-ID fields, which the hot path stores with fasthttp's
// SetCanonical (no key normalisation), go on the wire in fasthttp's
// canonical case exactly once each, are found by lookups of any spelling
// (the error handler reads the request ID back); and SetCanonical strips a
// CR or LF from a value, as Set does. The app is wired as Run wires it.
func TestRedirectWireHeaders(t *testing.T) {
	handler := benchWired(t, map[string]string{"LINKGATE_DATABASE_URL": "sqlite://" + filepath.Join(t.TempDir(), "wire.db")})
	rc := newRequestCtx()
	for _, reqID := range []string{"", "client-chosen.id_1"} {
		rc.Request.Reset()
		rc.Response.Reset()
		rc.Request.Header.SetMethod(fasthttp.MethodGet)
		rc.Request.SetRequestURI("/" + stackCode(3))
		if reqID != "" {
			rc.Request.Header.Set("x-request-id", reqID)
		}
		handler(rc)
		head := string(rc.Response.Header.Header())
		if rc.Response.StatusCode() != fiber.StatusFound {
			t.Fatalf("GET /%s: %d\n%s", stackCode(3), rc.Response.StatusCode(), head)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`\r\nLocation: ` + regexp.QuoteMeta(stackURL(3)) + `\r\n`),
			regexp.MustCompile(`\r\nCache-Control: private, max-age=30\r\n`),
			regexp.MustCompile(`\r\nX-Request-Id: [0-9a-z._:-]+\r\n`),
		} {
			if n := len(want.FindAllStringIndex(head, -1)); n != 1 {
				t.Errorf("%d fields matching %s in\n%s", n, want, head)
			}
		}
		h := &rc.Response.Header
		if got := string(h.Peek("location")); got != stackURL(3) {
			t.Errorf("Peek(location) = %q", got)
		}
		if got := string(h.Peek("CACHE-CONTROL")); got != "private, max-age=30" {
			t.Errorf("Peek(CACHE-CONTROL) = %q", got)
		}
		if got := string(h.Peek(fiber.HeaderXRequestID)); got == "" || reqID != "" && got != reqID {
			t.Errorf("Peek(%s) = %q, want the request's %q or a generated one", fiber.HeaderXRequestID, got, reqID)
		}
	}
	// Stored URLs are validated at creation; should a row hold a line
	// break anyway, SetCanonical strips it as Set does (fasthttp versions
	// have differed here: this guards an upgrade).
	var h fasthttp.ResponseHeader
	h.SetCanonical([]byte(fiber.HeaderLocation), []byte("https://example.com/\r\nSet-Cookie: a=b"))
	if v := h.Peek(fiber.HeaderLocation); bytes.ContainsAny(v, "\r\n") || bytes.Contains(h.Header(), []byte("\r\nSet-Cookie")) {
		t.Errorf("SetCanonical kept a line break: %q", h.Header())
	}
}
