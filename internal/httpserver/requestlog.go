package httpserver

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/clientip"
)

// maxRequestIDLen is the longest client-chosen request ID accepted.
const maxRequestIDLen = 128

// validRequestID accepts client-chosen IDs of 1-maxRequestIDLen characters
// from a safe set, so they can be logged and echoed without escaping
// concerns.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.' || b == ':') {
			return false
		}
	}
	return true
}

// requestIDs generates IDs from a random per-process prefix, fasthttp's
// number for the connection and the request's number on it
// ("<prefix>-<conn>.<req>", both base 36): unique across instances and
// requests without reading crypto/rand, and without a counter shared by
// every request (the cores would pass its cache line back and forth).
type requestIDs struct {
	prefix string
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// append appends the ID of request number req on connection conn to dst:
// at most 40 bytes (the prefix's 13, two base-36 uint64s of up to 13 each
// and a dot).
func (g *requestIDs) append(dst []byte, conn, req uint64) []byte {
	b := strconv.AppendUint(append(dst, g.prefix...), conn, 36)
	b = append(b, '.')
	return strconv.AppendUint(b, req, 36)
}

// requestIDKey is X-Request-ID in the form fasthttp stores it (its canonical
// case), so that it can be set with SetCanonical and found by lookups of
// either spelling (TestRedirectWireHeaders in cmd/linkgate).
const requestIDKey = "X-Request-Id"

// requestLog takes the request ID from a valid X-Request-ID or makes one,
// returns it in the response header, renders any error through errorHandler
// (so the status logged is the one sent), and writes one JSON access-log line
// per request.
func requestLog(log *accessLog, clientIP clientip.Source, errorHandler fiber.ErrorHandler) fiber.Handler {
	ids := newRequestIDs()
	return func(c *fiber.Ctx) error {
		start := c.Context().Time() // when fasthttp called the handler: no clock read of our own
		// The ID lives in this frame, not in a string of its own: one
		// allocation fewer per request. A client's ID is copied, so the
		// line logs what was answered whatever happens to the request.
		var idBuf [maxRequestIDLen]byte // a generated ID takes at most 40
		var id []byte
		if v := c.Get(fiber.HeaderXRequestID); validRequestID(v) {
			id = append(idBuf[:0], v...)
		} else {
			id = ids.append(idBuf[:0], c.Context().ConnID(), c.Context().ConnRequestNum())
		}
		// Also where the error handler reads it. Set as c.Set would, without
		// normalising the key on every request (see requestIDKey).
		c.Response().Header.SetCanonical([]byte(requestIDKey), id)
		var herr error
		if err := c.Next(); err != nil {
			herr = errorHandler(c, err) // Fiber answers 500 if this fails too
		}
		if status := c.Response().StatusCode(); log.enabled(status) {
			e := accessEntry{start: start, method: c.Method(), path: c.Path(),
				status: status, bytes: len(c.Response().Body())}
			if r := c.Route(); r != nil {
				e.route = r.Path
			}
			var ip [64]byte // the longest IPv6 text (45 bytes) fits
			log.write(&e, id, clientIP.Append(ip[:0], c))
		}
		return herr
	}
}
