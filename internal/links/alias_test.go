package links

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func TestValidateAlias(t *testing.T) {
	for name, tc := range map[string]struct {
		in  string
		why string // substring of the message; "" when valid
	}{
		"3 chars":            {in: "abc"},
		"64 chars":           {in: strings.Repeat("a", 64)},
		"all classes":        {in: "My_Link-2024"},
		"dashes only":        {in: "---"},
		"underscores only":   {in: "___"},
		"digits":             {in: "123"},
		"reserved prefix":    {in: "apis"},
		"reserved suffix":    {in: "myapi"},
		"reserved + dash":    {in: "api-docs"},
		"generated-looking":  {in: "aZ09xY7"},
		"empty":              {in: "", why: "must not be empty"},
		"1 char":             {in: "a", why: "at least 3 characters"},
		"2 chars":            {in: "ab", why: "at least 3 characters"},
		"65 chars":           {in: strings.Repeat("a", 65), why: "at most 64 characters"},
		"1000 chars":         {in: strings.Repeat("x", 1000), why: "at most 64 characters"},
		"space":              {in: "my link", why: "may contain only letters"},
		"slash":              {in: "a/b", why: "may contain only letters"},
		"dot":                {in: "a.b.c", why: "may contain only letters"},
		"dot dot":            {in: "..", why: "may contain only letters"},
		"percent":            {in: "a%20b", why: "may contain only letters"},
		"query":              {in: "abc?x", why: "may contain only letters"},
		"tilde":              {in: "~abc", why: "may contain only letters"},
		"accented":           {in: "café", why: "may contain only letters"},
		"cyrillic lookalike": {in: "аbc", why: "may contain only letters"}, // Cyrillic а
		"emoji":              {in: "🔗🔗🔗", why: "may contain only letters"},
		"fullwidth":          {in: "ａｂｃ", why: "may contain only letters"},
		"newline":            {in: "abc\n", why: "may contain only letters"},
		"nul":                {in: "ab\x00c", why: "may contain only letters"},
		"invalid utf8":       {in: "ab\xffc", why: "may contain only letters"},
		"short unicode":      {in: "é", why: "may contain only letters"},
		"reserved api":       {in: "api", why: `"api" is reserved`},
		"reserved API":       {in: "API", why: `"API" is reserved`},
		"reserved Health":    {in: "Health", why: "is reserved"},
		"reserved hEaLtHz":   {in: "hEaLtHz", why: "is reserved"},
		"reserved ENCURTAR":  {in: "ENCURTAR", why: "is reserved"},
		"reserved Metrics":   {in: "Metrics", why: "is reserved"},
		"reserved www":       {in: "WWW", why: "is reserved"},
		"reserved favicon":   {in: "FavIcon", why: "is reserved"},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidateAlias(tc.in)
			if tc.why == "" {
				if err != nil {
					t.Fatalf("ValidateAlias(%q) = %v, want nil", tc.in, err)
				}
				if !ValidCode(tc.in) {
					t.Fatalf("ValidCode(%q) = false for a valid alias", tc.in)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != EINVALID || e.Field != "code" {
				t.Fatalf("ValidateAlias(%q) = %#v, want an EINVALID *Error with Field code", tc.in, err)
			}
			if !strings.Contains(e.Message, tc.why) {
				t.Fatalf("ValidateAlias(%q) message = %q, want it to contain %q", tc.in, e.Message, tc.why)
			}
		})
	}
}

func TestIsReserved(t *testing.T) {
	words := []string{"api", "health", "healthz", "ready", "readyz", "live", "livez", "metrics", "encurtar",
		"static", "assets", "web", "admin", "docs", "login", "logout", "status", "robots", "favicon", "www"}
	for _, w := range words {
		for _, s := range []string{w, strings.ToUpper(w), strings.ToUpper(w[:1]) + w[1:]} {
			if !IsReserved(s) {
				t.Errorf("IsReserved(%q) = false", s)
			}
		}
	}
	for _, s := range []string{"", "ap", "apix", "xapi", "healthy", "encurtarx", "wwww", "ａｐｉ", "api ", "abc"} {
		if IsReserved(s) {
			t.Errorf("IsReserved(%q) = true", s)
		}
	}
}

func TestValidCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"abc", true},
		{"aZ09xY7", true},
		{"a-b_c", true},
		{strings.Repeat("Z", 64), true},
		{"api", true}, // reserved words may still be looked up; they simply never exist
		{"", false},
		{"ab", false},
		{strings.Repeat("Z", 65), false},
		{"abc/", false},
		{"ab.c", false},
		{"abç", false},
		{"ab\x00", false},
		{"ab\xff", false},
		{"favicon.ico", false},
		{"%41bc", false},
	} {
		if got := ValidCode(tc.in); got != tc.want {
			t.Errorf("ValidCode(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for range 1000 {
		code, err := NewCode(rand.Reader, CodeLength)
		if err != nil {
			t.Fatal(err)
		}
		if !ValidCode(code) {
			t.Fatalf("ValidCode(%q) = false for a generated code", code)
		}
	}
}

func TestAliasAllocations(t *testing.T) {
	code := "aZ09xY7"
	if n := testing.AllocsPerRun(100, func() { _ = ValidCode(code) }); n != 0 {
		t.Errorf("ValidCode allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = IsReserved("HeAlThZ") }); n != 0 {
		t.Errorf("IsReserved allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ValidateAlias("My_Link-2024") }); n != 0 {
		t.Errorf("ValidateAlias allocates %v times per call on success", n)
	}
}

func FuzzValidateAlias(f *testing.F) {
	for _, s := range []string{"abc", "API", "a/b", "ab", strings.Repeat("a", 65), "é", "My_Link-2024"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateAlias(s)
		if err == nil {
			if !ValidCode(s) || IsReserved(s) {
				t.Fatalf("ValidateAlias(%q) = nil but ValidCode=%v IsReserved=%v", s, ValidCode(s), IsReserved(s))
			}
			return
		}
		if ErrorCode(err) != EINVALID || ErrorMessage(err) == "" {
			t.Fatalf("ValidateAlias(%q) = %v, want EINVALID with a message", s, err)
		}
		if ValidCode(s) && !IsReserved(s) {
			t.Fatalf("ValidateAlias(%q) = %v but the code is valid and not reserved", s, err)
		}
	})
}

func BenchmarkValidCode(b *testing.B) {
	codes := []string{"aZ09xY7", "my-custom_alias-2024", "favicon.ico", strings.Repeat("a", 64)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = ValidCode(codes[i%len(codes)])
	}
}
