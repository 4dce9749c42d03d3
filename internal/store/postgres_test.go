package store_test

import (
	"database/sql"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/store/storetest"
	"github.com/jitgate/jitgate/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

func openPostgres(t *testing.T, url string) *store.Store {
	t.Helper()
	return openPostgresWith(t, url, store.DefaultConfig())
}

func openPostgresWith(t *testing.T, url string, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.OpenPostgres(t.Context(), url, cfg)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgres runs the conformance suite against a real PostgreSQL server
// (testenv.Postgres), a new database per subtest.
func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		return openPostgres(t, testenv.Postgres(t))
	})
}

// TestPostgresConfigured runs the suite's cases that need a configured
// store against a real PostgreSQL server.
func TestPostgresConfigured(t *testing.T) {
	storetest.RunConfigured(t, func(t *testing.T, cfg store.Config) *store.Store {
		return openPostgresWith(t, testenv.Postgres(t), cfg)
	})
}

// TestPostgresReplicas races requests, approvals and audit events through
// three stores on one PostgreSQL database, as three server replicas do.
func TestPostgresReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T, n int) []*store.Store {
		url := testenv.Postgres(t)
		ss := make([]*store.Store, n)
		for i := range ss {
			ss[i] = openPostgres(t, url)
		}
		return ss
	})
}

// TestPostgresMigrateTogether: replicas starting together on an empty
// database (testenv.PostgresEmpty, not the pre-migrated copy the other
// tests get) take turns migrating it: every one opens, each migration is
// applied once, and the stores work on the result.
func TestPostgresMigrateTogether(t *testing.T) {
	url := testenv.PostgresEmpty(t)
	const replicas = 3
	stores := make([]*store.Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = store.OpenPostgres(t.Context(), url, store.DefaultConfig())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: OpenPostgres on an empty database: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var applied, distinct int
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	want, err := fs.Glob(os.DirFS("migrations_postgres"), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(want) || distinct != len(want) {
		t.Errorf("schema_migrations holds %d rows (%d versions), want each of the %d migrations once", applied, distinct, len(want))
	}
	if _, err := stores[0].CreateAdminToken(t.Context(), store.Actor{Name: "test"}, "alice", time.Now()); err != nil {
		t.Fatalf("writing through a store on the migrated database: %v", err)
	}
	if n, err := stores[replicas-1].CountTokens(t.Context(), store.KindAdmin); err != nil || n != 1 {
		t.Errorf("admin tokens seen by another replica: %d, %v; want 1", n, err)
	}
}

// TestPostgresReplicasStricterDefault: a database whose default isolation
// is REPEATABLE READ (an operator's setting) keeps the invariants: the
// store's write transactions ask for READ COMMITTED themselves, so each
// statement after the write lock sees what the writer before committed.
func TestPostgresReplicasStricterDefault(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T, n int) []*store.Store {
		url := testenv.Postgres(t)
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(t.Context(), `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = ''repeatable read''', current_database()); END $$`); err != nil {
			t.Fatal(err)
		}
		ss := make([]*store.Store, n)
		for i := range ss {
			ss[i] = openPostgres(t, url)
		}
		return ss
	})
}

// opener opens a new, empty store with cfg, closed when the test ends.
type opener func(t *testing.T, cfg store.Config) *store.Store

// eachDatabase runs f as a subtest on a new SQLite store and on a new
// PostgreSQL one, for the store tests that are not (yet) in storetest.
func eachDatabase(t *testing.T, f func(t *testing.T, open opener)) {
	t.Run("SQLite", func(t *testing.T) {
		f(t, func(t *testing.T, cfg store.Config) *store.Store {
			s := openSQLiteWith(t, filepath.Join(t.TempDir(), "jitgate.db"), cfg)
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		f(t, func(t *testing.T, cfg store.Config) *store.Store {
			s, err := store.OpenPostgres(t.Context(), testenv.Postgres(t), cfg)
			if err != nil {
				t.Fatalf("OpenPostgres: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}
