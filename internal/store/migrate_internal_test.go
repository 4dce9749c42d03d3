package store

import (
	"context"
	"path/filepath"
	"testing"
)

// remigrate returns a store whose database went through migration version
// again on top of the rows seed writes: it opens a fresh database, runs
// seed, forgets that version was applied, and reopens it, so OpenSQLite runs
// that migration over data written in the old shape. The store is closed when
// the test ends.
func remigrate(t *testing.T, version string, seed ...string) *Store {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "j.db")
	s, err := OpenSQLite(ctx, path, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(seed, `DELETE FROM schema_migrations WHERE version = '`+version+`'`) {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close()
	if s, err = OpenSQLite(ctx, path, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
