package handlers

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/links"
)

// Locals keys set by the middleware here.
const (
	apiKeyLocal  = "linkgate.apikey"
	authErrLocal = "linkgate.auth_error"
)

// APIKey returns the key the request authenticated with, or nil.
func APIKey(c *fiber.Ctx) *links.APIKey {
	k, _ := c.Locals(apiKeyLocal).(*links.APIKey)
	return k
}

// APIKeyID returns the ID of the key the request authenticated with, or "".
// It is public (not the secret), so it may key a rate-limit bucket.
func APIKeyID(c *fiber.Ctx) string {
	if k := APIKey(c); k != nil {
		return k.ID
	}
	return ""
}

// Authenticate is middleware that identifies the caller: a valid
// "Authorization: Bearer <key>" makes the key available through APIKey.
// A missing header passes anonymously. A malformed or unknown key is not
// refused here but remembered, so that the rate limiter (keyed by client IP
// for such requests) runs before CheckAuth refuses it: guessing keys is
// rate limited like anything else. Store failures are returned at once.
func (h *Handlers) Authenticate(c *fiber.Ctx) error {
	token, present, ok := bearer(c)
	if !present {
		return c.Next()
	}
	if !ok {
		c.Locals(authErrLocal, links.Errorf(links.EUNAUTHORIZED, "Use Authorization: Bearer <API key>."))
		return c.Next()
	}
	k, err := h.cfg.Auth.Authenticate(c.UserContext(), token)
	switch {
	case links.ErrorCode(err) == links.EUNAUTHORIZED:
		c.Locals(authErrLocal, err)
	case err != nil:
		return err
	default:
		c.Locals(apiKeyLocal, k)
	}
	return c.Next()
}

// bearer returns the token of the request's Authorization header: present
// reports whether there is such a header, ok whether it is a well-formed
// Bearer token.
func bearer(c *fiber.Ctx) (token string, present, ok bool) {
	header := c.Get(fiber.HeaderAuthorization)
	if header == "" {
		return "", false, false
	}
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	return token, true, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

// UnvouchedKey reports whether authenticating this request will read the
// store for a key id not known to hold a key: it presents a Bearer token
// the Authenticator does not vouch for. The server charges such requests to
// a per-client budget before Authenticate runs, so that made-up keys cannot
// turn into one database read each; a real key is charged when first seen.
func (h *Handlers) UnvouchedKey(c *fiber.Ctx) bool {
	token, _, ok := bearer(c)
	return ok && !h.cfg.Auth.Vouched(token)
}

// CheckAuth is middleware after Authenticate (and the rate limiter): it
// answers 401 for a request that presented a malformed or unknown key.
func (h *Handlers) CheckAuth(c *fiber.Ctx) error {
	if err, ok := c.Locals(authErrLocal).(error); ok {
		return err
	}
	return c.Next()
}

// RequireAdmin is middleware after Authenticate: 401 without a key, 403 with
// a key that is not an admin key.
func (h *Handlers) RequireAdmin(c *fiber.Ctx) error {
	k := APIKey(c)
	if k == nil {
		return links.Errorf(links.EUNAUTHORIZED, "This endpoint needs an admin API key (Authorization: Bearer ...).")
	}
	if !k.Admin {
		return links.Errorf(links.EFORBIDDEN, "This endpoint needs an admin API key.")
	}
	return c.Next()
}
