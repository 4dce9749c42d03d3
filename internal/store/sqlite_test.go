package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/store/storetest"
)

func openSQLite(t *testing.T, path string) *store.Store {
	t.Helper()
	return openSQLiteWith(t, path, store.DefaultConfig())
}

func openSQLiteWith(t *testing.T, path string, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.OpenSQLite(t.Context(), path, cfg)
	if err != nil {
		t.Fatalf("OpenSQLite(%s): %v", path, err)
	}
	return s
}

// TestSQLiteConfigured runs the suite's cases that need a configured store.
func TestSQLiteConfigured(t *testing.T) {
	storetest.RunConfigured(t, func(t *testing.T, cfg store.Config) *store.Store {
		s := openSQLiteWith(t, filepath.Join(t.TempDir(), "jitgate.db"), cfg)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestSQLiteReplicas: the replica invariants hold with several stores (as
// several processes) on one SQLite file too.
func TestSQLiteReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T, n int) []*store.Store {
		path := filepath.Join(t.TempDir(), "jitgate.db")
		ss := make([]*store.Store, n)
		for i := range ss {
			ss[i] = openSQLite(t, path)
			t.Cleanup(func() { ss[i].Close() })
		}
		return ss
	})
}

var t0 = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

// seed creates a target with a policy, an enrolled agent and a pending
// request, and returns the admin token, the agent credential and the request.
func seed(t *testing.T, s *store.Store) (admin, cred string, req store.Request) {
	t.Helper()
	ctx := t.Context()
	actor := store.Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	admin, err := s.CreateAdminToken(ctx, actor, "alice", t0)
	if err != nil {
		t.Fatalf("CreateAdminToken: %v", err)
	}
	_, tok, err := s.CreateTarget(ctx, actor, "web-1", map[string]string{"env": "prod"}, t0, time.Hour)
	if err != nil {
		t.Fatalf("CreateTarget: %v", err)
	}
	if _, cred, err = s.Enroll(ctx, tok, []string{"192.0.2.5"}, "1.0.0", "192.0.2.5", t0); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, actor, "web-1", pol, t0); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	req, err = s.CreateRequest(ctx, actor, "web-1", policy.Request{
		Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix("198.51.100.7/32"), Duration: time.Hour, Reason: "r",
	}, policy.DefaultLimits(), t0)
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	return admin, cred, req
}

// TestSQLiteFileMode: the database and its WAL and shared-memory files hold
// policies and the audit trail, so nobody but the owner may read them, from
// the very first open.
func TestSQLiteFileMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "jitgate.db")
	s := openSQLite(t, path)
	defer s.Close()
	seed(t, s)
	check := func(when string) {
		t.Helper()
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: directory %s: mode %v, %v; want 0700", when, dir, fi.Mode().Perm(), err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if errors.Is(err, fs.ErrNotExist) && p != path {
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", when, err)
				continue
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("%s: %s has mode %v, want 0600", when, filepath.Base(p), got)
			}
		}
	}
	check("first open")
	s.Close()
	s = openSQLite(t, path)
	defer s.Close()
	check("reopen")
}

// TestSQLiteFileModeTightened: a database file left world-readable (by an
// older version or a careless copy) is tightened on open.
func TestSQLiteFileModeTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jitgate.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openSQLite(t, path)
	defer s.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after open = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestSQLiteWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	defer s.Close()
	seed(t, s)
	db := rawDB(t, path)
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

// TestSQLiteStatementJournalInMemory: the writer's connection keeps its
// statement journal (the savepoint of each operation of a group commit) in
// memory, not in a temporary file written page by page.
func TestSQLiteStatementJournalInMemory(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	defer s.Close()
	var mode int
	if err := store.Tx(s, context.Background(), func(tx *sql.Tx) error {
		return tx.QueryRow(`PRAGMA temp_store`).Scan(&mode)
	}); err != nil {
		t.Fatal(err)
	}
	if mode != 2 {
		t.Errorf("temp_store = %d on the writer's connection, want 2 (MEMORY)", mode)
	}
}

// TestSQLiteReopen: everything committed survives closing and reopening, and
// migrations run again without harm.
func TestSQLiteReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	admin, cred, req := seed(t, s)
	if _, err := s.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	before, err := s.GetTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for i := range 2 {
		s = openSQLite(t, path)
		after, err := s.GetTarget(ctx, "web-1")
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if after.Revision != before.Revision || after.AppliedRevision != before.AppliedRevision || after.Policy == nil ||
			!after.Policy.Equal(*before.Policy) || after.AgentVersion != "1.0.0" || after.Labels["env"] != "prod" {
			t.Errorf("reopen %d: target %+v, want %+v", i, after, before)
		}
		r, err := s.GetRequest(ctx, req.ID)
		if err != nil || r.State != access.Active {
			t.Errorf("reopen %d: request = %+v, %v; want active", i, r, err)
		}
		for _, sec := range []string{admin, cred} {
			if _, err := s.Authenticate(ctx, sec, t0); err != nil {
				t.Errorf("reopen %d: token no longer authenticates: %v", i, err)
			}
		}
		got, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil || len(got) != len(events) {
			t.Errorf("reopen %d: %d audit events, %v; want %d", i, len(got), err, len(events))
		}
		_, _, gs, err := s.DesiredState(ctx, "web-1", t0.Add(time.Minute))
		if err != nil || len(gs) != 1 {
			t.Errorf("reopen %d: grants = %v, %v; want 1", i, gs, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestSQLiteSecretsNotStored: token secrets appear neither in any column of
// any row nor anywhere in the database files.
func TestSQLiteSecretsNotStored(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	admin, cred, _ := seed(t, s)
	_, enroll, err := s.CreateTarget(ctx, store.Actor{Name: "alice"}, "db-1", nil, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"admin": admin, "agent": cred, "enroll": enroll}

	// Every column of every row of every table, while the store is open.
	db := rawDB(t, path)
	tables, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for tables.Next() {
		var n string
		if err := tables.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	tables.Close()
	tokenRows := 0
	for _, table := range names {
		rows, err := db.QueryContext(ctx, `SELECT * FROM "`+table+`"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			if table == "tokens" {
				tokenRows++
			}
			vals := make([]sql.RawBytes, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				for kind, sec := range secrets {
					if bytes.Contains(v, []byte(sec)) || bytes.Contains(v, []byte(sec[4:])) {
						t.Errorf("the %s secret is stored in plaintext in %s.%s", kind, table, cols[i])
					}
				}
			}
		}
		rows.Close()
	}
	if tokenRows != 3 {
		t.Errorf("tokens table has %d rows, want 3 (admin, agent, db-1's enrollment)", tokenRows)
	}
	db.Close()

	// The files themselves, after a checkpoint on close.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for kind, sec := range secrets {
			if bytes.Contains(b, []byte(sec[4:])) {
				t.Errorf("the %s secret appears in %s", kind, filepath.Base(p))
			}
		}
	}
}

// TestSQLiteConcurrentWriters: many writers at once through separate
// connections never see SQLITE_BUSY (immediate transactions and a busy
// timeout serialise them) and all their writes are recorded.
func TestSQLiteConcurrentWriters(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	defer s.Close()
	actor := store.Actor{Name: "alice"}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}, {Port: policy.Port{Number: 443}}}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	names := []string{"web-1", "web-2", "web-3", "web-4", "web-5"}
	for _, name := range names {
		if _, _, err := s.CreateTarget(ctx, actor, name, nil, t0, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetPolicy(ctx, actor, name, pol, t0); err != nil {
			t.Fatal(err)
		}
	}
	start := make(chan struct{})
	errs := make(chan error, 3*n)
	for i := range n {
		go func() {
			<-start
			port := uint16([]int{22, 443}[i%2])
			req := policy.Request{Ports: []policy.Port{{Number: port, Protocol: policy.TCP}},
				Source: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), 32), Duration: time.Hour}
			_, err := s.CreateRequest(ctx, actor, names[i%len(names)], req, policy.DefaultLimits(), t0)
			errs <- err
			// Readers and sweeps interleave with the writers.
			_, _, _, err = s.DesiredState(ctx, names[i%len(names)], t0)
			errs <- err
			_, err = s.Sweep(ctx, t0, time.Minute)
			errs <- err
		}()
	}
	close(start)
	for range 3 * n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	rs, err := s.ListRequests(ctx, store.RequestFilter{})
	if err != nil || len(rs) != n {
		t.Errorf("recorded %d requests, %v; want %d", len(rs), err, n)
	}
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", store.SQLiteDSN(path, "mode=ro", "_pragma=busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestSQLiteLegacyUserNamedLikeService: a user token issued before user
// names were checked, to a name that reads as a service ("service:ci"),
// no longer authenticates (issue 9, item 6d): it would act, and own
// requests, as the service.
func TestSQLiteLegacyUserNamedLikeService(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	defer s.Close()
	secret, info, err := s.CreateToken(t.Context(), store.Actor{Name: "admin"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "ci", TTL: time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", store.SQLiteDSN(path, "_pragma=busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), `UPDATE tokens SET subject = 'service:ci' WHERE id = $1`, info.ID); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Authenticate(t.Context(), secret, t0); !errors.Is(err, store.ErrUnauthorized) {
		t.Errorf("a personal token of user %q authenticated as %+v, %v; want ErrUnauthorized", "service:ci", p, err)
	}
}
