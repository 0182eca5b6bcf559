package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/problem"
)

// MaxBodyBytes caps request bodies (the server's BodyLimit enforces it with 413).
const MaxBodyBytes = 16 << 10

// decodeJSON strictly decodes the request body into dst: the content type must
// be application/json (415 otherwise), the body one JSON object with no
// unknown fields and nothing after it (400 otherwise, saying what is wrong).
func decodeJSON(c *fiber.Ctx, dst any) error {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || (mt != fiber.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
		return problem.New(fiber.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type.",
			"Send the body as application/json.")
	}
	body := c.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return links.Errorf(links.EBADREQUEST, "The request body is empty; send a JSON object.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return links.Errorf(links.EBADREQUEST, "%s", describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return links.Errorf(links.EBADREQUEST, "The body must hold exactly one JSON object.")
	}
	return nil
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tim *timeParseError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("Malformed JSON at byte %d.", syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "Malformed JSON: the body ends too early."
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("Field %q must be a JSON %s.", typ.Field, jsonKind(typ.Type.Kind().String()))
		}
		return "The body must be a JSON object."
	case errors.As(err, &tim):
		return tim.Error()
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Sprintf("Unknown field %s.", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return "Malformed JSON."
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "int", "int64", "int32":
		return "integer"
	case "struct", "map":
		return "object"
	case "ptr":
		return "value of the right type"
	}
	return goKind
}

// timeParseError reports an expires_at that is not RFC 3339.
type timeParseError struct{ value string }

func (e *timeParseError) Error() string {
	return fmt.Sprintf("expires_at %q must be an RFC 3339 timestamp such as 2030-01-02T15:04:05Z.", e.value)
}
