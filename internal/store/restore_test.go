package store_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// activeGrant seeds a target with an active request and returns it with the
// target's revision.
func activeGrant(t *testing.T, s *store.Store) (store.Request, int64) {
	t.Helper()
	_, _, req := seed(t, s)
	if _, err := s.ReportApplied(t.Context(), "web-1", req.Revision, "", nil, "", t0); err != nil {
		t.Fatalf("ReportApplied: %v", err)
	}
	rev, _, grants, err := s.DesiredState(t.Context(), "web-1", t0)
	if err != nil || len(grants) != 1 {
		t.Fatalf("DesiredState = %d grants, %v; want the live grant", len(grants), err)
	}
	return req, rev
}

func auditCount(t *testing.T, s *store.Store, action audit.Action) int {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{Action: string(action)})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// agentAheadSetup opens a fresh database (closed when the test ends) with
// an active grant on web-1, and returns the request, the revision its agent
// applied and the database generation before anything else happens.
func agentAheadSetup(t *testing.T) (*store.Store, store.Request, int64, int64) {
	t.Helper()
	s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	t.Cleanup(func() { s.Close() })
	req, rev := activeGrant(t, s)
	gen0, err := s.Generation(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, req, rev, gen0
}

// TestAgentAheadEndsLiveGrants: an agent that applied a higher revision than
// the database holds proves the database went back. Its target's live grants
// end (revoked, with the reason, audited) and the revision moves above the
// agent's, so the agent accepts the state again; a second report of the
// same mark changes nothing.
func TestAgentAheadEndsLiveGrants(t *testing.T) {
	ctx := t.Context()
	s, req, rev, gen0 := agentAheadSetup(t)

	ended, newRev, err := s.AgentAhead(ctx, "web-1", rev+3, rev, t0.Add(time.Minute))
	if err != nil || ended != 1 || newRev != rev+4 {
		t.Fatalf("AgentAhead = %d, %d, %v; want 1 request ended and revision %d", ended, newRev, err, rev+4)
	}
	got, err := s.GetRequest(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != access.Revoked || !strings.Contains(got.Message, "database restored") {
		t.Errorf("request after AgentAhead: %s %q, want revoked with \"database restored\"", got.State, got.Message)
	}
	// Its removal is confirmed only by a revision of the new numbering: the
	// agent's own rev+3 may hold the grant.
	if got.Removal == nil || got.Removal.Revision != rev+4 || got.Removal.ConfirmedBy(rev+3) {
		t.Errorf("removal after AgentAhead = %+v, want unconfirmed until revision %d", got.Removal, rev+4)
	}
	newRev, _, grants, err := s.DesiredState(ctx, "web-1", t0.Add(time.Minute))
	if err != nil || len(grants) != 0 || newRev != rev+4 {
		t.Errorf("DesiredState = revision %d, %d grants, %v; want revision %d and no grant", newRev, len(grants), err, rev+4)
	}
	if gen, _ := s.Generation(ctx); gen <= gen0 {
		t.Errorf("generation %d after the lift, want above %d", gen, gen0)
	}
	if n := auditCount(t, s, audit.AgentRevisionAhead); n != 1 {
		t.Errorf("%d agent.revision_ahead events, want 1", n)
	}

	// The same report again, now that the server knows revision rev+4:
	// nothing more happens.
	if ended, newRev, err := s.AgentAhead(ctx, "web-1", rev+3, rev+4, t0.Add(2*time.Minute)); err != nil || ended != 0 || newRev != 0 {
		t.Errorf("repeated AgentAhead = %d, %d, %v; want a no-op", ended, newRev, err)
	}

	// Later changes already carried the revision past the agent's (the
	// agent cannot tell): the revision still moves above both.
	cur, _, _, _ := s.DesiredState(ctx, "web-1", t0)
	if _, newRev, err := s.AgentAhead(ctx, "web-1", cur-1, cur-2, t0.Add(3*time.Minute)); err != nil || newRev != cur+1 {
		t.Errorf("AgentAhead below the current revision = %d, %v; want revision %d", newRev, err, cur+1)
	}
	if _, _, err := s.AgentAhead(ctx, "nope", 9, 1, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AgentAhead of an unknown target = %v, want ErrNotFound", err)
	}
}

// TestBackupAndRestoreSQLite: `jitgate backup` copies a database in use
// (VACUUM INTO) into a 0600 file marked as a restore; RestoreSQLite puts a
// copy in place and keeps the replaced database aside; EndRestored revokes
// what the copy brought back, lifts every revision and clears the mark.
func TestBackupAndRestoreSQLite(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "jitgate.db")
	s := openSQLite(t, path)
	req, rev := activeGrant(t, s)

	backup := filepath.Join(dir, "backup.db")
	if err := store.BackupSQLite(ctx, path, backup, t0); err != nil {
		t.Fatalf("BackupSQLite with the database open: %v", err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", fi, err)
	}
	if err := store.BackupSQLite(ctx, path, backup, t0); !errors.Is(err, fs.ErrExist) {
		t.Errorf("a second backup onto the same file = %v, want it refused (exists)", err)
	}
	if _, err := s.RevokeRequest(ctx, store.Actor{Name: "alice"}, req.ID, "done", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, marked, _ := s.RestoreMarked(ctx); marked {
		t.Error("the live database carries the restore mark of its backup")
	}
	s.Close()

	replaced, err := store.RestoreSQLite(ctx, backup, path, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatalf("RestoreSQLite: %v", err)
	}
	if _, err := os.Stat(replaced); err != nil || replaced == "" {
		t.Errorf("the replaced database was not kept aside: %q, %v", replaced, err)
	}
	if _, err := store.RestoreSQLite(ctx, filepath.Join(dir, "admin.token"), path, t0); err == nil {
		t.Error("restoring from a file that is not a database succeeded")
	}
	s = openSQLite(t, path)
	defer s.Close()
	if _, marked, err := s.RestoreMarked(ctx); !marked || err != nil {
		t.Fatalf("RestoreMarked = %v, %v; want the restored copy marked", marked, err)
	}
	// The copy still says active: this is what EndRestored is for.
	if got, _ := s.GetRequest(ctx, req.ID); got.State != access.Active {
		t.Fatalf("request in the copy: %s, want active (as when it was copied)", got.State)
	}
	n, err := s.EndRestored(ctx, 5, "database restored: grant ended", t0.Add(3*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("EndRestored = %d, %v; want 1 request ended", n, err)
	}
	if got, _ := s.GetRequest(ctx, req.ID); got.State != access.Revoked || got.Message != "database restored: grant ended" {
		t.Errorf("request after EndRestored: %s %q, want revoked with the reason", got.State, got.Message)
	}
	newRev, _, grants, _ := s.DesiredState(ctx, "web-1", t0.Add(3*time.Minute))
	// Lifted by at least 5 (ending the grant advanced it once more: its
	// removal awaits the agent's confirmation).
	if len(grants) != 0 || newRev < rev+5 {
		t.Errorf("DesiredState = revision %d with %d grants, want revision ≥ %d and none", newRev, len(grants), rev+5)
	}
	if _, marked, _ := s.RestoreMarked(ctx); marked {
		t.Error("restore mark still set after EndRestored")
	}
	if n := auditCount(t, s, audit.DatabaseRestored); n != 1 {
		t.Errorf("%d database.restored events, want 1", n)
	}
}

// TestAgentAheadRefusesImpossibleRevision: a claimed revision above
// wire.MaxRevision is refused before any arithmetic, so neither the target's
// revision nor the generation overflows (an overflow saturated the
// generation, which ended the restore guard's detection for every target).
func TestAgentAheadRefusesImpossibleRevision(t *testing.T) {
	ctx := t.Context()
	s, req, rev, gen0 := agentAheadSetup(t)
	for _, hw := range []int64{wire.MaxRevision + 1, math.MaxInt64 - 5, math.MaxInt64} {
		if _, _, err := s.AgentAhead(ctx, "web-1", hw, rev, t0.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
			t.Errorf("AgentAhead(%d) = %v, want ErrConflict", hw, err)
		}
	}
	if gen, err := s.Generation(ctx); err != nil || gen != gen0 {
		t.Errorf("generation after refused claims = %d, %v; want %d", gen, err, gen0)
	}
	if got, err := s.GetRequest(ctx, req.ID); err != nil || got.State != access.Active {
		t.Errorf("request after refused claims = %s, %v; want active", got.State, err)
	}
}

// TestGenerationWithoutARead: on SQLite, once the store has committed,
// Generation answers from what the group-commit writer's last commit left,
// without a read (asked with a cancelled context, which fails any read; the
// restore guard asks after every change, before the agents are woken), and
// the answer is what the database holds after each kind of change: a grant,
// a revocation, the lift of EndRestored.
func TestGenerationWithoutARead(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	t.Cleanup(func() { s.Close() })
	db, err := sql.Open("sqlite", store.SQLiteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	check := func(after string) {
		t.Helper()
		var want int64
		if err := db.QueryRow(`SELECT value FROM store_meta WHERE key = 'generation'`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Generation(cancelled); err != nil || got != want {
			t.Errorf("after %s: Generation = %d, %v; want %d from the writer, no read", after, got, err, want)
		}
	}
	req, _ := activeGrant(t, s)
	check("a grant")
	if _, err := s.RevokeRequest(ctx, store.Actor{Name: "admin"}, req.ID, "done", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("a revocation")
	if _, err := s.EndRestored(ctx, 5, "restored", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("a restore's lift")
}
