package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// futureMigration is a schema version no jitgate has yet: a database
// holding it was migrated by a newer binary.
const futureMigration = "9999_from_a_newer_jitgate"

// TestDowngradeGuard: a database a newer jitgate migrated (a schema
// version this binary does not know) is refused at open, naming the
// version, on SQLite and on PostgreSQL, and nothing in it changes.
func TestDowngradeGuard(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		driver string
		dsn    func(t *testing.T) string
		open   func(ctx context.Context, dsn string) (*store.Store, error)
	}{
		{"SQLite", "sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "jitgate.db") },
			func(ctx context.Context, p string) (*store.Store, error) {
				return store.OpenSQLite(ctx, p, store.DefaultConfig())
			}},
		{"PostgreSQL", "pgx", func(t *testing.T) string { return testenv.Postgres(t) },
			func(ctx context.Context, url string) (*store.Store, error) {
				return store.OpenPostgres(ctx, url, store.DefaultConfig())
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dsn := c.dsn(t)
			s, err := c.open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db, err := sql.Open(c.driver, rawDSN(c.driver, dsn))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)`, futureMigration); err != nil {
				t.Fatal(err)
			}
			s, err = c.open(ctx, dsn)
			if err == nil {
				s.Close()
				t.Fatal("a database with a newer schema opened")
			}
			if !errors.Is(err, store.ErrSchemaNewer) || !strings.Contains(err.Error(), futureMigration) {
				t.Fatalf("error %q: want ErrSchemaNewer naming %s", err, futureMigration)
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, futureMigration).Scan(&n); err != nil || n != 1 {
				t.Fatalf("the newer version's row: %d, %v", n, err)
			}
		})
	}
}

func rawDSN(driver, dsn string) string {
	if driver == "sqlite" {
		return store.SQLiteDSN(dsn)
	}
	return dsn
}

// TestSQLiteBackupBeforeMigrating: opening a SQLite database that lacks a
// migration copies it aside first, next to it and named with the schema
// version it had; the copy holds the rows as they were. A database that is
// up to date, or new, is not copied.
func TestSQLiteBackupBeforeMigrating(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "jitgate.db")
	s, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateTarget(ctx, store.Actor{Name: "admin"}, "web-01", nil, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if baks, _ := filepath.Glob(path + ".schema-*.bak"); len(baks) != 0 {
		t.Fatalf("a new database was copied: %v", baks)
	}
	// Reopening an up-to-date database copies nothing either.
	if s, err = store.OpenSQLite(ctx, path, store.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if baks, _ := filepath.Glob(path + ".schema-*.bak"); len(baks) != 0 {
		t.Fatalf("an up-to-date database was copied: %v", baks)
	}

	// Make the database look one migration behind (the last one is
	// idempotent enough to run again, as remigrate shows for each).
	db, err := sql.Open("sqlite", store.SQLiteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	var last, before string
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = $1`, last); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		// Not every migration can run twice; then the copy is still made
		// before it is tried.
		t.Logf("re-running %s: %v", last, err)
	} else {
		s.Close()
	}
	baks, _ := filepath.Glob(path + ".schema-" + before + "-*.bak")
	if len(baks) != 1 {
		all, _ := os.ReadDir(dir)
		t.Fatalf("want one copy named with schema %s, have %v", before, all)
	}
	if fi, err := os.Stat(baks[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy %s: %v, mode %v", baks[0], err, fi.Mode())
	}
	cp, err := sql.Open("sqlite", store.SQLiteDSN(baks[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	var n int
	if err := cp.QueryRowContext(ctx, `SELECT count(*) FROM targets WHERE name = 'web-01'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the copy's target: %d, %v", n, err)
	}
	if err := cp.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, last).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the copy has migration %s: %d, %v", last, n, err)
	}
}
