package cache

import (
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

func TestCodecRoundTrip(t *testing.T) {
	full := testLink("abc1234")
	noExpiry := testLink("x-y_z")
	noExpiry.ExpiresAt = time.Time{}
	far := testLink("far")
	far.ExpiresAt = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	far.CreatedAt = time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC)
	idn := testLink("idn")
	idn.URL = "https://xn--bcher-kva.example/ü?a=b&c=%20"
	idn.ID = 1<<62 + 3
	local := testLink("local")
	local.CreatedAt = time.Date(2024, 1, 1, 12, 0, 0, 5000, time.FixedZone("X", 3600))
	for _, l := range []links.Link{full, noExpiry, far, idn, local} {
		got, negative, err := decodeValue(string(encodeLink(&l)))
		if err != nil || negative {
			t.Fatalf("decode(encode(%+v)) = %v, %v", l, negative, err)
		}
		sameCachedLink(t, got, l)
		if got.CreatedAt.Location() != time.UTC {
			t.Fatalf("CreatedAt not in UTC: %v", got.CreatedAt)
		}
	}
	if n := len(encodeLink(&full)); n > 32+len(full.Code)+len(full.URL) {
		t.Fatalf("encoding of %+v is %d bytes", full, n)
	}
	if _, negative, err := decodeValue(negativeValue); err != nil || !negative {
		t.Fatalf("negative marker decodes as %v, %v", negative, err)
	}
}

func TestCodecRejectsMalformed(t *testing.T) {
	l := testLink("abc1234")
	enc := string(encodeLink(&l))
	// Every strict prefix of an encoding without a URL is malformed.
	noURL := l
	noURL.URL = ""
	short := string(encodeLink(&noURL))
	for i := 1; i < len(short); i++ {
		if _, _, err := decodeValue(short[:i]); err == nil {
			t.Fatalf("prefix %q decoded", short[:i])
		}
	}
	for _, v := range []string{"", "\x02" + enc[1:], "\x00\x00", "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
		"\x01\x02\x02\x01\x02\xff\xff\xff\xff\x0f\x00\x05ab"} {
		if _, _, err := decodeValue(v); err == nil {
			t.Fatalf("%q decoded", v)
		}
	}
}

func FuzzDecodeValue(f *testing.F) {
	l := testLink("abc1234")
	f.Add(string(encodeLink(&l)))
	f.Add(negativeValue)
	f.Add("\x01")
	f.Fuzz(func(t *testing.T, v string) {
		got, negative, err := decodeValue(v)
		if err != nil || negative {
			return
		}
		// Whatever decodes must survive a round trip (varints may be
		// non-minimal, so compare links, not bytes).
		again, negative, err := decodeValue(string(encodeLink(got)))
		if err != nil || negative {
			t.Fatalf("round trip of %+v gave %v, %v", *got, negative, err)
		}
		sameCachedLink(t, again, *got)
	})
}
