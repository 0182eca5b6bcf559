package handlers

import (
	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/links"
)

// The routes of the original Flask exercise, kept so its clients and
// checkpoints work unchanged. Errors answer {"erro": "..."} (see ErrorHandler).

type seedCreateRequest struct {
	URLLonga *string `json:"url_longa"`
}

type seedCreateResponse struct {
	URLLonga string `json:"url_longa"`
	URLCurta string `json:"url_curta"`
}

// SeedCreate handles POST /encurtar {"url_longa": ...} → 201 {"url_longa", "url_curta"}.
func (h *Handlers) SeedCreate(c *fiber.Ctx) error {
	if err := h.mayCreate(c); err != nil {
		return err
	}
	var req seedCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.URLLonga == nil || *req.URLLonga == "" {
		return links.Errorf(links.EBADREQUEST, "url_longa is required.")
	}
	l, err := h.cfg.Links.Create(c.UserContext(), links.CreateRequest{URL: *req.URLLonga})
	if err != nil {
		if links.ErrorCode(err) == links.EINVALID { // the seed answered 400 to every bad URL
			return links.Errorf(links.EBADREQUEST, "%s", links.ErrorMessage(err))
		}
		return err
	}
	h.cfg.Metrics.LinkCreated()
	short := h.cfg.BaseURL + "/" + l.Code
	c.Location(short)
	return c.Status(fiber.StatusCreated).JSON(seedCreateResponse{URLLonga: l.URL, URLCurta: short})
}

// seedListMax bounds GET /api/links, which has no pagination.
const seedListMax = 10000

// SeedList handles GET /api/links (admin): a map code → URL of the newest
// links, at most seedListMax of them (use /api/v1/links to page through all).
func (h *Handlers) SeedList(c *fiber.Ctx) error {
	out := make(map[string]string)
	p := links.ListParams{Limit: links.MaxListLimit}
	for len(out) < seedListMax {
		ls, next, err := h.cfg.Links.List(c.UserContext(), p)
		if err != nil {
			return err
		}
		for _, l := range ls {
			out[l.Code] = l.URL
		}
		if next.AfterID == 0 {
			break
		}
		p.Cursor = next
	}
	c.Set(fiber.HeaderCacheControl, "private, no-cache")
	return c.JSON(out)
}
