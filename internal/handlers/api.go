package handlers

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/linkgate/linkgate/internal/links"
)

// rfc3339Time decodes an RFC 3339 timestamp with a clear error.
type rfc3339Time struct{ time.Time }

func (t *rfc3339Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &timeParseError{value: string(b)}
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return &timeParseError{value: s}
	}
	t.Time = v
	return nil
}

type createRequest struct {
	URL       *string      `json:"url"`
	Code      string       `json:"code"`
	ExpiresAt *rfc3339Time `json:"expires_at"`
	Redirect  int          `json:"redirect"`
}

// CreateLink handles POST /api/v1/links: 201 with Location and the link.
func (h *Handlers) CreateLink(c *fiber.Ctx) error {
	if err := h.mayCreate(c); err != nil {
		return err
	}
	var req createRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.URL == nil {
		return links.FieldErrorf("url", "url is required.")
	}
	cr := links.CreateRequest{URL: *req.URL, Code: req.Code, Redirect: req.Redirect}
	if req.ExpiresAt != nil {
		cr.ExpiresAt = req.ExpiresAt.Time
	}
	l, err := h.cfg.Links.Create(c.UserContext(), cr)
	if err != nil {
		return err
	}
	h.cfg.Metrics.LinkCreated()
	j, _ := h.view(l)
	c.Location(j.ShortURL)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(j)
}

// mayCreate enforces LINKGATE_PUBLIC_CREATE.
func (h *Handlers) mayCreate(c *fiber.Ctx) error {
	if !h.cfg.PublicCreate && APIKey(c) == nil {
		return links.Errorf(links.EUNAUTHORIZED, "Creating links needs an API key (Authorization: Bearer ...).")
	}
	return nil
}

// cacheControl for API reads: revalidate every time (clicks change), and
// keep responses to authenticated requests out of shared caches.
func cacheControl(c *fiber.Ctx) string {
	if c.Get(fiber.HeaderAuthorization) != "" {
		return "private, no-cache"
	}
	return "no-cache"
}

// GetLink handles GET (and HEAD) /api/v1/links/:code: the link's metadata and
// clicks, with a strong ETag and Last-Modified; conditional requests get 304
// or 412 (RFC 9110 section 13).
func (h *Handlers) GetLink(c *fiber.Ctx) error {
	l, err := h.cfg.Links.Get(c.UserContext(), c.Params("code"))
	if err != nil {
		return err
	}
	j, modified := h.view(l)
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, cacheControl(c))
	c.Vary(fiber.HeaderAuthorization)
	return sendConditional(c, body, modified)
}

// DeleteLink handles DELETE /api/v1/links/:code (admin): 204. With
// preconditions (If-Match, If-Unmodified-Since, If-None-Match), the link is
// deleted only if they hold for its current representation (412 otherwise).
func (h *Handlers) DeleteLink(c *fiber.Ctx) error {
	code := utils.CopyString(c.Params("code"))
	var check func(*links.Link) error
	if c.Get(fiber.HeaderIfMatch) != "" || c.Get(fiber.HeaderIfUnmodifiedSince) != "" || c.Get(fiber.HeaderIfNoneMatch) != "" {
		check = func(l *links.Link) error {
			j, modified := h.view(l)
			body, err := json.Marshal(j)
			if err != nil {
				return err
			}
			if precondition(c, strongETag(body), modified) != 0 { // 412; DELETE never gets 304
				return links.Errorf(links.EPRECONDITION, "The link's current representation does not satisfy the request's preconditions.")
			}
			return nil
		}
	}
	if err := h.cfg.Links.Delete(c.UserContext(), code, check); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

type listResponse struct {
	Links      []linkJSON `json:"links"`
	NextCursor *string    `json:"next_cursor"`
}

// ListLinks handles GET /api/v1/links?limit=&cursor= (admin): newest first,
// keyset-paginated; next_cursor is null on the last page.
func (h *Handlers) ListLinks(c *fiber.Ctx) error {
	p, err := parseListParams(c)
	if err != nil {
		return err
	}
	ls, next, err := h.cfg.Links.List(c.UserContext(), p)
	if err != nil {
		return err
	}
	resp := listResponse{Links: make([]linkJSON, 0, len(ls))}
	for _, l := range ls {
		j, _ := h.view(l)
		resp.Links = append(resp.Links, j)
	}
	if next.AfterID != 0 {
		s := encodeCursor(next)
		resp.NextCursor = &s
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "private, no-cache")
	c.Vary(fiber.HeaderAuthorization)
	// Last-Modified is left out: a deletion changes the page without
	// changing any remaining link's time. The ETag covers every change.
	return sendConditional(c, body, time.Time{})
}

func parseListParams(c *fiber.Ctx) (links.ListParams, error) {
	var p links.ListParams
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > links.MaxListLimit {
			return p, &links.Error{Code: links.EBADREQUEST, Field: "limit",
				Message: "limit must be a whole number between 1 and " + strconv.Itoa(links.MaxListLimit) + "."}
		}
		p.Limit = n
	}
	if v := c.Query("cursor"); v != "" {
		cur, ok := decodeCursor(v)
		if !ok {
			return p, &links.Error{Code: links.EBADREQUEST, Field: "cursor", Message: "cursor is not one this API returned."}
		}
		p.Cursor = cur
	}
	return p, nil
}

// Cursors are opaque to clients: "v1:<id>" in unpadded base64url.
func encodeCursor(c links.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.FormatInt(c.AfterID, 10)))
}

func decodeCursor(s string) (links.Cursor, bool) {
	if len(s) > 64 {
		return links.Cursor{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 4 || string(b[:3]) != "v1:" {
		return links.Cursor{}, false
	}
	id, err := strconv.ParseInt(string(b[3:]), 10, 64)
	if err != nil || id < 1 || strconv.FormatInt(id, 10) != string(b[3:]) {
		return links.Cursor{}, false
	}
	return links.Cursor{AfterID: id}, true
}
