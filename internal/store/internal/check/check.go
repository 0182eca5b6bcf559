// Package check holds the input rules both store drivers apply the same way,
// so that the conformance suite sees one behaviour. Pure functions, safe for
// concurrent use.
package check

import (
	"fmt"
	"slices"

	"github.com/linkgate/linkgate/internal/links"
)

// ListLimit maps a requested page size to the one used: below 1 means the
// default, above the maximum is capped.
func ListLimit(n int) int {
	switch {
	case n < 1:
		return links.DefaultListLimit
	case n > links.MaxListLimit:
		return links.MaxListLimit
	}
	return n
}

// ClickCodes returns the codes with a positive count, sorted (so that
// concurrent batches lock rows in one order), or an EINVALID error for a
// negative count.
func ClickCodes(counts map[string]int64) ([]string, error) {
	codes := make([]string, 0, len(counts))
	for code, n := range counts {
		if n < 0 {
			return nil, fmt.Errorf("add clicks: %w", links.Errorf(links.EINVALID, "negative click count %d for %q", n, code))
		}
		if n > 0 {
			codes = append(codes, code)
		}
	}
	slices.Sort(codes)
	return codes, nil
}

// APIKey returns an EINVALID error for a missing key or a hash that is not a
// SHA-256.
func APIKey(k *links.APIKey) error {
	if k == nil {
		return links.Errorf(links.EINVALID, "no API key given")
	}
	if len(k.Hash) != 32 {
		return links.Errorf(links.EINVALID, "API key hash is %d bytes, want 32 (SHA-256)", len(k.Hash))
	}
	return nil
}
