package handlers

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/links"
)

// Locals keys set by the middleware here.
const (
	apiKeyLocal  = "linkgate.apikey"
	RequestIDKey = "linkgate.request_id"
)

// APIKey returns the key the request authenticated with, or nil.
func APIKey(c *fiber.Ctx) *links.APIKey {
	k, _ := c.Locals(apiKeyLocal).(*links.APIKey)
	return k
}

// Authenticate is middleware: a request with an Authorization header must
// carry a valid "Bearer <key>" (401 otherwise); the key is then available
// through APIKey. Requests without the header pass anonymously.
func (h *Handlers) Authenticate(c *fiber.Ctx) error {
	header := c.Get(fiber.HeaderAuthorization)
	if header == "" {
		return c.Next()
	}
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return links.Errorf(links.EUNAUTHORIZED, "Use Authorization: Bearer <API key>.")
	}
	k, err := h.cfg.Auth.Authenticate(c.UserContext(), token)
	if err != nil {
		return err
	}
	c.Locals(apiKeyLocal, k)
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
