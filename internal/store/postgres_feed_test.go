package store_test

import (
	"database/sql"
	"testing"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/store/storetest"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestPostgresShared runs the cases of a database shared by replicas: two
// store handles on one real PostgreSQL database, as two servers hold.
func TestPostgresShared(t *testing.T) {
	var url string
	storetest.RunShared(t, func(t *testing.T) (a, b *store.Store) {
		url = testenv.Postgres(t)
		return openPostgres(t, url), openPostgres(t, url)
	}, func(t *testing.T) {
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRowContext(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
			store.FeedApplicationName).Scan(&n); err != nil || n == 0 {
			t.Fatalf("cutting the feeds' connections: %d cut, %v", n, err)
		}
	})
}
