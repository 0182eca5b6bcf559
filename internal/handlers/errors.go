package handlers

import (
	"encoding/json"
	"errors"
	"html"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/problem"
)

// codes maps domain error codes to HTTP statuses and problem slugs.
var codes = map[string]struct {
	status      int
	slug, title string
}{
	links.EBADREQUEST:   {fiber.StatusBadRequest, "bad-request", "The request is malformed."},
	links.EINVALID:      {fiber.StatusUnprocessableEntity, "validation-failed", "The request failed validation."},
	links.ECONFLICT:     {fiber.StatusConflict, "conflict", "The code is already taken."},
	links.ENOTFOUND:     {fiber.StatusNotFound, "not-found", "Not found."},
	links.EGONE:         {fiber.StatusGone, "gone", "The link has expired."},
	links.EUNAUTHORIZED: {fiber.StatusUnauthorized, "unauthorized", "Authentication required."},
	links.EFORBIDDEN:    {fiber.StatusForbidden, "forbidden", "Not allowed."},
	links.EPRECONDITION: {fiber.StatusPreconditionFailed, "precondition-failed", "A precondition failed."},
	links.EUNAVAILABLE:  {fiber.StatusServiceUnavailable, "unavailable", "Service unavailable."},
	links.EINTERNAL:     {fiber.StatusInternalServerError, "internal-error", "Internal error."},
}

// fiberSlugs names the problems behind Fiber's own errors.
var fiberSlugs = map[int]string{
	fiber.StatusBadRequest:                  "bad-request",
	fiber.StatusNotFound:                    "not-found",
	fiber.StatusMethodNotAllowed:            "method-not-allowed",
	fiber.StatusRequestTimeout:              "request-timeout",
	fiber.StatusRequestEntityTooLarge:       "body-too-large",
	fiber.StatusUnsupportedMediaType:        "unsupported-media-type",
	fiber.StatusRequestHeaderFieldsTooLarge: "headers-too-large",
	fiber.StatusTooManyRequests:             "quota-exceeded",
}

// Problem converts any error a handler returned into problem details.
func Problem(err error) *problem.Details {
	var p *problem.Details
	var fe *fiber.Error
	var le *links.Error
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &le):
		m := codes[le.Code]
		if m.status == 0 {
			m = codes[links.EINTERNAL]
		}
		p = problem.New(m.status, m.slug, m.title, le.Message)
		if le.Field != "" {
			p = p.With("field", le.Field)
		}
		return p
	case errors.As(err, &fe):
		slug := fiberSlugs[fe.Code]
		switch {
		case fe.Code == fiber.StatusNotFound:
			return problem.New(fe.Code, slug, "Not found.", "No route or link at this path.")
		case fe.Code == fiber.StatusRequestEntityTooLarge:
			return problem.New(fe.Code, slug, "Request body too large.", "Request bodies are limited to 16 KiB.")
		case slug == "" && fe.Code >= 500:
			return problem.New(fe.Code, "internal-error", "Internal error.", "")
		case slug == "":
			slug = "bad-request"
		}
		return problem.New(fe.Code, slug, utils.StatusMessage(fe.Code)+".", fe.Message)
	default:
		return problem.New(fiber.StatusInternalServerError, "internal-error", "Internal error.", "")
	}
}

// seedRoutes answer errors as {"erro": "..."}, like the Flask app they replace.
func isSeedRoute(c *fiber.Ctx) bool {
	return c.Path() == "/encurtar" || c.Path() == "/api/links"
}

// ErrorHandler is the Fiber error handler: every error becomes a problem+json
// response (or the seed routes' {"erro"} body, or a small HTML page for a
// browser that followed a dead short link). Only 5xx errors are logged, with
// the request ID (the X-Request-ID response header, set by the request log
// before the handlers run).
func (h *Handlers) ErrorHandler(c *fiber.Ctx, err error) error {
	p := Problem(err)
	if p.Status >= 500 {
		h.cfg.Logger.Error("request failed", "request_id", string(c.Response().Header.Peek(fiber.HeaderXRequestID)), "method", c.Method(),
			"path", c.Path(), "err", err)
	}
	c.Status(p.Status)
	if p.Status == fiber.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="linkgate"`)
	}
	if p.Status == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	if isSeedRoute(c) {
		body, _ := json.Marshal(map[string]string{"erro": firstNonEmpty(p.Detail, p.Title)})
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		return c.Send(body)
	}
	if (p.Status == fiber.StatusNotFound || p.Status == fiber.StatusGone) && wantsHTML(c) {
		c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
		return c.SendString(`<!doctype html><html lang="en"><meta charset="utf-8"><title>` + html.EscapeString(p.Title) +
			`</title><body style="font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto"><h1>` +
			html.EscapeString(p.Title) + `</h1><p>` + html.EscapeString(p.Detail) + `</p></body></html>`)
	}
	body, merr := json.Marshal(p)
	if merr != nil {
		return merr
	}
	c.Set(fiber.HeaderContentType, problem.ContentType)
	return c.Send(body)
}

// wantsHTML reports whether the client is a browser navigating (Accept names
// text/html explicitly).
func wantsHTML(c *fiber.Ctx) bool {
	return c.Method() == fiber.MethodGet && strings.Contains(c.Get(fiber.HeaderAccept), "text/html")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
