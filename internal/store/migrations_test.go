package store

import (
	"io/fs"
	"strings"
	"testing"
)

// TestMigrationsHavePostgresCounterparts: every SQLite migration has a
// PostgreSQL migration of the same name and the other way round, so a
// schema change made for one database is not forgotten for the other.
func TestMigrationsHavePostgresCounterparts(t *testing.T) {
	names := func(dir string) map[string]bool {
		entries, err := fs.ReadDir(migrations, dir)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".sql") {
				t.Errorf("%s/%s: not a .sql file", dir, e.Name())
			}
			m[e.Name()] = true
		}
		return m
	}
	sqlite, pg := names(sqliteDialect.migrations), names(postgresDialect.migrations)
	if len(sqlite) == 0 {
		t.Fatal("no SQLite migrations embedded")
	}
	for n := range sqlite {
		if !pg[n] {
			t.Errorf("SQLite migration %s has no PostgreSQL counterpart in %s/", n, postgresDialect.migrations)
		}
	}
	for n := range pg {
		if !sqlite[n] {
			t.Errorf("PostgreSQL migration %s has no SQLite counterpart in %s/", n, sqliteDialect.migrations)
		}
	}
}
