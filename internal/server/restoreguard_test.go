package server

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"modernc.org/sqlite"
)

// openGuarded opens the data directory's database as Run does: restore
// guard first, then the mark kept current after every change.
func openGuarded(t *testing.T, dir string, log *slog.Logger) *store.Store {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "jitgate.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return guarded(t, st, dir, log)
}

// guarded puts st, just opened, under the restore guard of dir as Run does:
// the guard's check first, then its mark noted after every change.
func guarded(t *testing.T, st *store.Store, dir string, log *slog.Logger) *store.Store {
	t.Helper()
	g, err := guardRestore(t.Context(), st, dir, log, time.Now())
	if err != nil {
		st.Close()
		t.Fatalf("guardRestore: %v", err)
	}
	t.Cleanup(func() { g.close() })
	st.Subscribe(func(...string) {
		if err := g.note(context.Background()); err != nil {
			t.Errorf("note: %v", err)
		}
	})
	return st
}

// copyDB copies the database file and its WAL (a server killed with
// SIGKILL leaves committed pages there) from one directory to another, and
// removes the target's shared-memory index, as an operator copying files
// would.
func copyDB(t *testing.T, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		os.Remove(filepath.Join(to, "jitgate.db"+suffix))
		b, err := os.ReadFile(filepath.Join(from, "jitgate.db"+suffix))
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, "jitgate.db"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(to, "jitgate.db-shm"))
}

// wantRestoreEnded checks what a start on a restored copy leaves: the
// request id, live in the copy, revoked for "database restored", and web-1's
// desired state without a grant, at a revision above revokedAt (the last
// one served before the restore).
func wantRestoreEnded(t *testing.T, st *store.Store, id string, revokedAt int64, now time.Time) {
	t.Helper()
	got, err := st.GetRequest(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != access.Revoked || !strings.Contains(got.Message, "database restored") {
		t.Errorf("request after starting on the older copy: %s %q, want revoked with \"database restored\"", got.State, got.Message)
	}
	rev, _, grants, err := st.DesiredState(t.Context(), "web-1", now)
	if err != nil || len(grants) != 0 || rev <= revokedAt {
		t.Errorf("desired state after the restore: revision %d with %d grants (%v), want no grant and a revision above %d (served before)",
			rev, len(grants), err, revokedAt)
	}
}

// guardActor is the actor of the restore-guard tests' changes.
var guardActor = store.Actor{Name: "admin"}

// gateWeb1 creates target web-1 in st and gates its 22/tcp.
func gateWeb1(t *testing.T, st *store.Store, now time.Time) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := st.CreateTarget(ctx, guardActor, "web-1", nil, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetPolicy(ctx, guardActor, "web-1", pol, now); err != nil {
		t.Fatal(err)
	}
}

// requestWeb1 asks for web-1's 22/tcp from src for an hour.
func requestWeb1(t *testing.T, st *store.Store, src string, now time.Time) store.Request {
	t.Helper()
	req, err := st.CreateRequest(context.Background(), guardActor, "web-1", policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}},
		Source: netip.MustParsePrefix(src), Duration: time.Hour, Reason: "r"}, policy.DefaultLimits(), now)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestRestoreGuardEndsGrantsOfAnOlderCopy: a database file copied while a
// grant was live, put back after the grant was revoked, must not show it
// active or send it to the agent: the server's start ends it (revoked, with
// the reason), moves the revision above every revision served since the
// copy, and says so in its log. A second start changes nothing more.
func TestRestoreGuardEndsGrantsOfAnOlderCopy(t *testing.T) {
	ctx := t.Context()
	dir, old := t.TempDir(), t.TempDir()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()

	st := openGuarded(t, dir, log)
	gateWeb1(t, st, now)
	req := requestWeb1(t, st, "198.51.100.7/32", now)
	if _, err := st.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", now); err != nil {
		t.Fatal(err)
	}
	st.Close()
	copyDB(t, dir, old) // the copy: the grant is live in it

	st = openGuarded(t, dir, log)
	if _, err := st.RevokeRequest(ctx, guardActor, req.ID, "done", now); err != nil {
		t.Fatal(err)
	}
	revokedAt, _, _, err := st.DesiredState(ctx, "web-1", now)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	copyDB(t, old, dir) // put back over the stopped server
	st = openGuarded(t, dir, log)
	defer st.Close()
	wantRestoreEnded(t, st, req.ID, revokedAt, now)
	if !strings.Contains(logs.String(), "database restored") {
		t.Errorf("the restore was not logged:\n%s", logs.String())
	}

	// Starting again on the same database is not a restore.
	st.Close()
	before := strings.Count(logs.String(), "database restored")
	openGuarded(t, dir, log)
	if n := strings.Count(logs.String(), "database restored"); n != before {
		t.Errorf("a plain restart was taken for a restore:\n%s", logs.String())
	}
}

// TestRestoreGuardWithoutMark: a copy made by `jitgate backup` ends its
// grants at the first start even on a data directory without a mark (a
// restore on a new host); a fresh data directory is not a restore.
func TestRestoreGuardWithoutMark(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	now := time.Now()
	st := openGuarded(t, dir, log)
	gateWeb1(t, st, now)
	req := requestWeb1(t, st, "198.51.100.7/32", now)
	if got, _ := st.GetRequest(ctx, req.ID); got.State != access.Pending {
		t.Fatalf("a fresh data directory was taken for a restore: request %s", got.State)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := store.BackupSQLite(ctx, filepath.Join(dir, "jitgate.db"), backup, now); err != nil {
		t.Fatal(err)
	}
	st.Close()

	newHost := t.TempDir()
	if _, err := store.RestoreSQLite(ctx, backup, filepath.Join(newHost, "jitgate.db"), now); err != nil {
		t.Fatal(err)
	}
	st = openGuarded(t, newHost, log)
	if got, _ := st.GetRequest(ctx, req.ID); got.State != access.Revoked {
		t.Errorf("request in a restored backup: %s, want revoked at the first start", got.State)
	}

	// A mark that cannot be read cannot vouch for the database: restore.
	req2 := requestWeb1(t, st, "198.51.100.8/32", now)
	st.Close()
	if err := os.WriteFile(filepath.Join(newHost, GenerationFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st = openGuarded(t, newHost, log)
	defer st.Close()
	if got, _ := st.GetRequest(ctx, req2.ID); got.State != access.Revoked {
		t.Errorf("request after starting with an unreadable mark: %s, want revoked", got.State)
	}
}

// TestLockDataDir: a second server (or a restore) on a data directory in
// use is refused with the holder's pid.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	release, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second lock = %v, want refused as in use", err)
	}
	release()
	release2, err := LockDataDir(dir)
	if err != nil {
		t.Errorf("lock after release: %v", err)
	} else {
		release2()
	}
}

// BenchmarkRestoreMarkNote is what the restore guard adds to every
// desired-state change: read the generation, rewrite the mark file.
func BenchmarkRestoreMarkNote(b *testing.B) {
	dir := b.TempDir()
	st, err := store.OpenSQLite(b.Context(), filepath.Join(dir, "jitgate.db"), store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	g, err := guardRestore(b.Context(), st, dir, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	defer g.close()
	for b.Loop() {
		g.written = -1 // write every time, as after a real change
		if err := g.note(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadMarkRefusesEndlessFile: a generation mark that never ends is an
// error (taken for a restore), not a read until memory runs out.
func TestReadMarkRefusesEndlessFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mark")
	if err := os.Symlink("/dev/zero", path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readMark(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("readMark(/dev/zero) = %v, want refused as too large", err)
	}
}

// putBackUnderRunningServer makes the live database at path hold the
// content of the copy at from, through SQLite's own backup API and locks
// (what `sqlite3 jitgate.db ".restore copy.db"` does): a server that has it
// open sees the older content coherently from its next read, without a
// restart and without `jitgate restore` (which the server's lock refuses).
func putBackUnderRunningServer(t *testing.T, path, from string) {
	t.Helper()
	db, err := sql.Open("sqlite", store.SQLiteDSN(path, "_pragma=busy_timeout(10000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(func(dc any) error {
		b, err := dc.(interface {
			NewRestore(string) (*sqlite.Backup, error)
		}).NewRestore(store.SQLiteDSN(from))
		if err != nil {
			return err
		}
		if _, err := b.Step(-1); err != nil {
			b.Finish()
			return err
		}
		return b.Finish()
	}); err != nil {
		t.Fatalf("restoring %s under the running server: %v", from, err)
	}
}

// TestRestoreGuardDatabaseWentBackUnderRunningServer: an older copy put
// back under a running server (through SQLite, so the server reads it at
// once), then as many changes as were made since the copy, bring the
// generation back to the mark: the start's check (generation below the
// mark) no longer sees the restore, and the revoked grant would show
// active and be sent to the agent again. The generation read after a change
// going below one already noted proves the database went back: the guard
// ends what the copy brought back then, before the agents are woken, and
// a restart finds nothing more to end.
func TestRestoreGuardDatabaseWentBackUnderRunningServer(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "jitgate.db")
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()

	st := openGuarded(t, dir, log)
	defer func() { st.Close() }()
	gateWeb1(t, st, now)
	req := requestWeb1(t, st, "198.51.100.7/32", now)
	if _, err := st.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", now); err != nil {
		t.Fatal(err)
	}
	// The copy: the grant is live in it (VACUUM INTO: a consistent copy
	// of the running database, no restore mark).
	old := filepath.Join(t.TempDir(), "copy.db")
	copier, err := sql.Open("sqlite", store.SQLiteDSN(path, "_pragma=busy_timeout(10000)"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = copier.ExecContext(ctx, `VACUUM INTO '`+old+`'`)
	copier.Close()
	if err != nil {
		t.Fatalf("copying: %v", err)
	}
	if _, err := st.RevokeRequest(ctx, guardActor, req.ID, "done", now); err != nil {
		t.Fatal(err)
	}
	revokedAt, _, _, err := st.DesiredState(ctx, "web-1", now)
	if err != nil {
		t.Fatal(err)
	}

	putBackUnderRunningServer(t, path, old)
	// One change since the copy (the revocation), one change after the
	// restore: the generation is where the mark is.
	requestWeb1(t, st, "198.51.100.8/32", now)
	wantRestoreEnded(t, st, req.ID, revokedAt, now)
	if !strings.Contains(logs.String(), "the database went back under the running server") {
		t.Errorf("the restore under the running server was not logged:\n%s", logs.String())
	}

	// A restart: nothing of the copy is live any more.
	st.Close()
	st = openGuarded(t, dir, log)
	wantRestoreEnded(t, st, req.ID, revokedAt, now)
}
