package cache

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

// L2 values. The first byte tags the value:
//
//	0x00             negative entry: the code does not exist (the whole value)
//	0x01 ...         a link, version 1:
//	    varint  ID
//	    varint  Redirect
//	    time    CreatedAt
//	    time    ExpiresAt
//	    uvarint len(Code), Code bytes
//	    URL bytes (the rest)
//	time = 0x00 for the zero time, or 0x01, varint Unix seconds, uvarint nanoseconds
//
// Clicks is not stored. A value with an unknown tag (for example one written
// by a newer version during a rolling deploy) fails to decode; the resolver
// then reads the Source and leaves the value alone.
const (
	tagNegative byte = 0x00
	tagLinkV1   byte = 0x01
)

// negativeValue is the L2 value of a negative entry.
const negativeValue = string(tagNegative)

var errBadValue = errors.New("malformed cached value")

// encodeLink returns the L2 value for l.
func encodeLink(l *links.Link) []byte {
	b := make([]byte, 0, 40+len(l.Code)+len(l.URL))
	b = append(b, tagLinkV1)
	b = binary.AppendVarint(b, l.ID)
	b = binary.AppendVarint(b, int64(l.Redirect))
	b = appendTime(b, l.CreatedAt)
	b = appendTime(b, l.ExpiresAt)
	b = binary.AppendUvarint(b, uint64(len(l.Code)))
	b = append(b, l.Code...)
	b = append(b, l.URL...)
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// decodeValue parses an L2 value: a link, or negative == true for a negative
// entry. Times come back in UTC. It never panics on malformed input.
func decodeValue(v string) (l *links.Link, negative bool, err error) {
	if v == negativeValue {
		return nil, true, nil
	}
	if len(v) == 0 || v[0] != tagLinkV1 {
		return nil, false, errBadValue
	}
	d := decoder{b: []byte(v[1:])}
	l = &links.Link{}
	l.ID = d.varint()
	l.Redirect = int(d.varint())
	l.CreatedAt = d.time()
	l.ExpiresAt = d.time()
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		return nil, false, errBadValue
	}
	l.Code = string(d.b[:n])
	l.URL = string(d.b[n:])
	return l, false, nil
}

// decoder reads varints from b, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errBadValue
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errBadValue
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	if len(d.b) == 0 {
		d.err = errBadValue
		return time.Time{}
	}
	flag := d.b[0]
	d.b = d.b[1:]
	switch flag {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if d.err != nil || nsec >= uint64(time.Second) {
			d.err = errBadValue
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	default:
		d.err = errBadValue
		return time.Time{}
	}
}
