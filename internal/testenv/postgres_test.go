package testenv_test

import (
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

// TestPostgres checks the harness: each test gets its own empty database on a
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
