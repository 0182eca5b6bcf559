package handlers

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

func TestETagList(t *testing.T) {
	tests := map[string][]string{
		`"a"`:                {`"a"`},
		`"a", W/"b",  "c"`:   {`"a"`, `W/"b"`, `"c"`},
		`*`:                  {"*"},
		`"a,b", "c"`:         {`"a,b"`, `"c"`},
		`garbage`:            nil,
		`"a", garbage, "b"`:  {`"a"`},
		`"unterminated`:      nil,
		``:                   nil,
		` , "x" ,`:           {`"x"`},
		`W/"weak"`:           {`W/"weak"`},
		`"a" "b"`:            {`"a"`, `"b"`},
		`W/ "space-invalid"`: nil,
	}
	for in, want := range tests {
		if got := etagList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("etagList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComparisons(t *testing.T) {
	if !matchWeak([]string{`W/"x"`}, `"x"`) || !matchWeak([]string{`"x"`}, `"x"`) || matchWeak([]string{`"y"`}, `"x"`) {
		t.Fatal("weak comparison wrong")
	}
	if matchStrong([]string{`W/"x"`}, `"x"`) || !matchStrong([]string{`"y"`, `"x"`}, `"x"`) || !matchStrong([]string{"*"}, `"x"`) {
		t.Fatal("strong comparison wrong")
	}
}

// TestPreconditionOrder runs sendConditional behind a real Fiber app.
func TestPreconditionOrder(t *testing.T) {
	body := []byte(`{"k":"v"}`)
	etag := strongETag(body)
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	before := mod.Add(-time.Hour).Format(http.TimeFormat)
	after := mod.Add(time.Hour).Format(http.TimeFormat)
	app := fiber.New(fiber.Config{ErrorHandler: func(c *fiber.Ctx, err error) error {
		return c.Status(Problem(err).Status).SendString(err.Error())
	}})
	handler := func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, "no-cache")
		c.Vary("Authorization")
		return sendConditional(c, body, mod)
	}
	app.Get("/r", handler)
	app.Delete("/r", handler)

	tests := map[string]struct {
		method string
		header map[string]string
		want   int
	}{
		"no conditions":                     {"GET", nil, 200},
		"INM match":                         {"GET", map[string]string{"If-None-Match": etag}, 304},
		"INM no match":                      {"GET", map[string]string{"If-None-Match": `"other"`}, 200},
		"INM list with match":               {"GET", map[string]string{"If-None-Match": `"a", ` + etag + `, "b"`}, 304},
		"INM star":                          {"GET", map[string]string{"If-None-Match": "*"}, 304},
		"INM weak form matches":             {"GET", map[string]string{"If-None-Match": "W/" + etag}, 304},
		"HEAD INM match":                    {"HEAD", map[string]string{"If-None-Match": etag}, 304},
		"IMS not modified":                  {"GET", map[string]string{"If-Modified-Since": after}, 304},
		"IMS same second":                   {"GET", map[string]string{"If-Modified-Since": mod.Format(http.TimeFormat)}, 304},
		"IMS modified":                      {"GET", map[string]string{"If-Modified-Since": before}, 200},
		"IMS ignored with INM":              {"GET", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": after}, 200},
		"IMS bad date ignored":              {"GET", map[string]string{"If-Modified-Since": "yesterday"}, 200},
		"If-Match match":                    {"GET", map[string]string{"If-Match": etag}, 200},
		"If-Match mismatch":                 {"GET", map[string]string{"If-Match": `"other"`}, 412},
		"If-Match weak never matches":       {"GET", map[string]string{"If-Match": "W/" + etag}, 412},
		"IUS modified since":                {"GET", map[string]string{"If-Unmodified-Since": before}, 412},
		"IUS not modified":                  {"GET", map[string]string{"If-Unmodified-Since": after}, 200},
		"DELETE INM match is 412":           {"DELETE", map[string]string{"If-None-Match": etag}, 412},
		"DELETE If-Match star":              {"DELETE", map[string]string{"If-Match": "*"}, 200},
		"If-Match then INM match gives 304": {"GET", map[string]string{"If-Match": etag, "If-None-Match": etag}, 304},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/r", nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, b)
			}
			if tc.want == 304 {
				if len(b) != 0 || resp.Header.Get("ETag") != etag || resp.Header.Get("Cache-Control") != "no-cache" ||
					resp.Header.Get("Vary") != "Authorization" {
					t.Fatalf("304 must carry ETag, Cache-Control, Vary and no body: %v %q", resp.Header, b)
				}
			}
			if tc.want == 200 && tc.method == "GET" && (string(b) != string(body) || resp.Header.Get("ETag") != etag ||
				resp.Header.Get("Last-Modified") != mod.Format(http.TimeFormat)) {
				t.Fatalf("200 must carry the body, ETag and Last-Modified: %v %q", resp.Header, b)
			}
		})
	}
}
