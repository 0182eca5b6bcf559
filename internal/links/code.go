package links

import (
	"errors"
	"fmt"
	"io"
)

// CodeLength is the length of generated short codes. 62^7 is about 3.5e12
// codes, so a table of a million links sees a random collision about once in
// 7,000 creations; the store's unique index catches it and the service
// retries with a fresh code.
const CodeLength = 7

// Alphabet is the base62 alphabet generated codes are drawn from, in the
// order NewCode maps byte values to characters.
const Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// acceptBelow is the largest multiple of len(Alphabet) that fits in a byte
// (4*62 = 248). Bytes at or above it are discarded so that b % 62 is uniform:
// taking b % 62 of every byte would make the first 256-248 = 8 characters
// 25% more likely than the others.
const acceptBelow = 256 / len(Alphabet) * len(Alphabet)

// maxEmptyReads bounds how many times in a row a reader may return no bytes
// and no error before NewCode gives up with io.ErrNoProgress.
const maxEmptyReads = 100

// NewCode returns n characters drawn uniformly and independently from
// Alphabet, using bytes read from r, which should be a cryptographically
// secure source such as crypto/rand.Reader.
//
// It uses rejection sampling: a byte is used only when it is below 248 (the
// largest multiple of 62 that fits in a byte) and maps to Alphabet[b%62]; other
// bytes are discarded, so every character is exactly equally likely. Bytes are
// read in chunks sized to the characters still needed plus a small margin
// (about 3% of bytes are rejected).
//
// NewCode returns an error, never a partial code, when n < 1, when r is nil,
// when r returns an error (including io.EOF) before n characters are
// produced, when r keeps returning no bytes,
// or when r yields more than 64*n+64 bytes without producing n characters,
// which a uniform source essentially never does (each byte is rejected with
// probability 1/32). It is safe for concurrent use if r is.
func NewCode(r io.Reader, n int) (string, error) {
	if n < 1 {
		return "", fmt.Errorf("new code: length %d is less than 1", n)
	}
	if r == nil {
		return "", errors.New("new code: nil random source")
	}
	// Codes are short; a stack buffer avoids one allocation for them.
	var small [64]byte
	var out []byte
	if n <= len(small) {
		out = small[:0]
	} else {
		out = make([]byte, 0, n)
	}
	var chunk [64]byte
	budget := 64*n + 64 // total bytes we are prepared to read
	empty := 0
	for len(out) < n {
		need := n - len(out)
		want := need + need/16 + 2 // expected rejections are need/31
		if want > len(chunk) {
			want = len(chunk)
		}
		if want > budget {
			want = budget
		}
		if want == 0 {
			return "", errors.New("new code: random source rejected too many bytes")
		}
		got, err := r.Read(chunk[:want])
		if got < 0 || got > want {
			return "", fmt.Errorf("new code: random source returned invalid count %d", got)
		}
		budget -= got
		for _, b := range chunk[:got] {
			if int(b) < acceptBelow && len(out) < n {
				out = append(out, Alphabet[int(b)%len(Alphabet)])
			}
		}
		if err != nil && len(out) < n {
			return "", fmt.Errorf("new code: read random source: %w", err)
		}
		if got == 0 {
			empty++
			if empty >= maxEmptyReads {
				return "", fmt.Errorf("new code: read random source: %w", io.ErrNoProgress)
			}
		} else {
			empty = 0
		}
	}
	return string(out), nil
}
