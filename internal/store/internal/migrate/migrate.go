// Package migrate loads the embedded, numbered SQL migrations that the store
// drivers apply at open. Applying them is the driver's job (each has its own
// locking and transaction rules); this package only finds, names and orders
// them, so both drivers agree on what a migration is.
//
// A migration is a file named NNNN_description.sql in the root of the given
// file system: NNNN is a positive decimal version (leading zeros allowed),
// versions are unique, and the file is not empty. Files are applied in version
// order, each once, and never edited after release: a change to the schema is
// a new file.
//
// Load is a pure function of its argument and safe for concurrent use.
package migrate

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one SQL file.
type Migration struct {
	Version int    // from the file name prefix; > 0
	Name    string // the file name, e.g. "0001_init.sql"
	SQL     string // the file's contents
}

// Load reads every *.sql file in the root of fsys and returns them sorted by
// version. It fails on a badly named file, a duplicate version, an empty
// file, or when there is no migration at all.
func Load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("load migrations: no *.sql files")
	}
	out := make([]Migration, 0, len(names))
	seen := make(map[int]string, len(names))
	for _, name := range names {
		v, err := version(name)
		if err != nil {
			return nil, fmt.Errorf("load migrations: %w", err)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("load migrations: %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("load migrations: %w", err)
		}
		if strings.TrimSpace(string(b)) == "" {
			return nil, fmt.Errorf("load migrations: %s is empty", name)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// version parses the NNNN of NNNN_description.sql.
func version(name string) (int, error) {
	base := strings.TrimSuffix(path.Base(name), ".sql")
	num, desc, ok := strings.Cut(base, "_")
	if !ok || desc == "" || num == "" {
		return 0, fmt.Errorf("%s: want NNNN_description.sql", name)
	}
	for _, r := range num {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%s: version %q is not a decimal number", name, num)
		}
	}
	v, err := strconv.Atoi(num)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%s: version %q must be a positive number", name, num)
	}
	return v, nil
}
