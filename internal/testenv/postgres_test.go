package testenv_test

import (
	"database/sql"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

// TestPostgres checks the harness: each test gets its own database on a
// real server reached through a unix socket, and the database is gone after
// the test.
func TestPostgres(t *testing.T) {
	var first string
	t.Run("a", func(t *testing.T) {
		first = testenv.Postgres(t)
		db := openPG(t, first)
		if _, err := db.Exec(`CREATE TABLE only_in_a (x int)`); err != nil {
			t.Fatal(err)
		}
		var version string
		if err := db.QueryRow(`SHOW server_version`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		var listen string
		if err := db.QueryRow(`SHOW listen_addresses`).Scan(&listen); err != nil {
			t.Fatal(err)
		}
		if listen != "" {
			t.Errorf("listen_addresses = %q, want none (unix socket only)", listen)
		}
		t.Logf("PostgreSQL %s at %s", version, first)
	})
	second := testenv.Postgres(t)
	if second == first {
		t.Fatalf("two tests got the same database %s", first)
	}
	db := openPG(t, second)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("a table of test a is visible in another test's database")
	}
	u, err := url.Parse(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM pg_database WHERE datname = $1`, strings.TrimPrefix(u.Path, "/")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database of finished test a still exists")
	}
}

func openPG(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPostgresSchema: Postgres gives a database with every migration of the
// store applied (copied from the template) and no rows, that a store opens
// as it is; PostgresEmpty gives one with no tables at all.
func TestPostgresSchema(t *testing.T) {
	for _, tc := range []struct {
		name     string
		new      func(testing.TB) string
		migrated bool
	}{
		{"Postgres", testenv.Postgres, true},
		{"PostgresEmpty", testenv.PostgresEmpty, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openPG(t, tc.new(t))
			var tables int
			if err := db.QueryRow(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
				t.Fatal(err)
			}
			if !tc.migrated {
				if tables != 0 {
					t.Errorf("%d tables in an empty database, want none", tables)
				}
				return
			}
			var applied, tokens int
			if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&applied); err != nil {
				t.Fatalf("no migrations table in a migrated database: %v", err)
			}
			want, err := fs.Glob(os.DirFS("../store/migrations_postgres"), "*.sql")
			if err != nil {
				t.Fatal(err)
			}
			if applied != len(want) || applied == 0 {
				t.Errorf("%d migrations applied, want all %d", applied, len(want))
			}
			if err := db.QueryRow(`SELECT count(*) FROM tokens`).Scan(&tokens); err != nil || tokens != 0 {
				t.Errorf("tokens in a new database: %d, %v; want none", tokens, err)
			}
		})
	}
}

// BenchmarkPostgresDatabase compares what a test pays for a store on a new
// database: a copy of the migrated template (Postgres) against an empty
// database migrated by the store (PostgresEmpty, as before the template).
func BenchmarkPostgresDatabase(b *testing.B) {
	for _, bc := range []struct {
		name string
		new  func(testing.TB) string
	}{
		{"template", testenv.Postgres},
		{"migrate", testenv.PostgresEmpty},
	} {
		b.Run(bc.name, func(b *testing.B) {
			testenv.Postgres(b) // the server and the template exist before the clock runs
			b.ResetTimer()
			for b.Loop() {
				s, err := store.OpenPostgres(b.Context(), bc.new(b), store.DefaultConfig())
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}
