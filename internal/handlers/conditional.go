package handlers

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/problem"
)

// Conditional requests, RFC 9110 section 13, written here rather than with
// Fiber v2's etag middleware because that middleware's 304 drops the ETag
// header and it knows nothing of If-Match or Last-Modified.

// strongETag is a strong validator for exact representation bytes.
func strongETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// etagList splits an If-Match / If-None-Match field value into entity tags,
// keeping the W/ prefix; "*" comes back as the single element "*". Malformed
// members are dropped (they can match nothing).
func etagList(v string) []string {
	var out []string
	for v = strings.TrimSpace(v); v != ""; {
		if v[0] == ',' {
			v = strings.TrimSpace(v[1:])
			continue
		}
		if v[0] == '*' {
			out = append(out, "*")
			v = strings.TrimSpace(v[1:])
			continue
		}
		weak := strings.HasPrefix(v, "W/")
		rest := v
		if weak {
			rest = v[2:]
		}
		if !strings.HasPrefix(rest, `"`) {
			return out
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return out
		}
		tag := rest[:end+2]
		if weak {
			tag = "W/" + tag
		}
		out = append(out, tag)
		v = strings.TrimSpace(rest[end+2:])
	}
	return out
}

func opaque(tag string) string { return strings.TrimPrefix(tag, "W/") }

// matchWeak reports whether the list matches current with the weak comparison
// (If-None-Match): opaque tags equal, W/ ignored.
func matchWeak(list []string, current string) bool {
	for _, t := range list {
		if t == "*" || opaque(t) == opaque(current) {
			return true
		}
	}
	return false
}

// matchStrong reports whether the list matches current with the strong
// comparison (If-Match): neither tag weak and opaque tags equal.
func matchStrong(list []string, current string) bool {
	for _, t := range list {
		if t == "*" {
			return true
		}
		if !strings.HasPrefix(t, "W/") && !strings.HasPrefix(current, "W/") && t == current {
			return true
		}
	}
	return false
}

// precondition evaluates the request's preconditions against the current
// representation, in the order of RFC 9110 section 13.2.2. It returns 0 to
// proceed, 304 (GET/HEAD, not modified) or 412 (precondition failed).
func precondition(c *fiber.Ctx, etag string, lastModified time.Time) int {
	safe := c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead
	if im := c.Get(fiber.HeaderIfMatch); im != "" {
		if !matchStrong(etagList(im), etag) {
			return fiber.StatusPreconditionFailed
		}
	} else if ius := c.Get(fiber.HeaderIfUnmodifiedSince); ius != "" && !lastModified.IsZero() {
		if t, err := http.ParseTime(ius); err == nil && lastModified.Truncate(time.Second).After(t) {
			return fiber.StatusPreconditionFailed
		}
	}
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" {
		if matchWeak(etagList(inm), etag) {
			if safe {
				return fiber.StatusNotModified
			}
			return fiber.StatusPreconditionFailed
		}
	} else if ims := c.Get(fiber.HeaderIfModifiedSince); ims != "" && safe && !lastModified.IsZero() {
		if t, err := http.ParseTime(ims); err == nil && !lastModified.Truncate(time.Second).After(t) {
			return fiber.StatusNotModified
		}
	}
	return 0
}

// sendConditional sends body as JSON with a strong ETag and Last-Modified,
// or a 304 (same ETag, Cache-Control and Vary, no body) or 412 when the
// request's preconditions say so. Cache-Control and Vary must already be set.
func sendConditional(c *fiber.Ctx, body []byte, lastModified time.Time) error {
	etag := strongETag(body)
	c.Set(fiber.HeaderETag, etag)
	if !lastModified.IsZero() {
		c.Set(fiber.HeaderLastModified, lastModified.UTC().Format(http.TimeFormat))
	}
	switch precondition(c, etag, lastModified) {
	case fiber.StatusNotModified:
		c.Status(fiber.StatusNotModified)
		c.Response().ResetBody()
		return nil
	case fiber.StatusPreconditionFailed:
		return problem.New(fiber.StatusPreconditionFailed, "precondition-failed", "A precondition failed.",
			"The link changed: its current ETag does not match If-Match / If-Unmodified-Since.")
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

// lastModified of a link's representation: when it was created or its
// clicks were last flushed, whichever is later.
func lastModified(l *links.Link) time.Time {
	if l.UpdatedAt.After(l.CreatedAt) {
		return l.UpdatedAt
	}
	return l.CreatedAt
}
