package e2e

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestRestoreNeverReopens puts older copies of the server's database back,
// three ways, each taken while a grant was live and put back after that
// grant was revoked, and checks with real packets that the port stays
// closed, that the API does not show the grant active, and who noticed:
//  1. the database file copied back over the stopped server: the server's
//     mark (outside the database) shows it is older; the server ends the
//     grant before serving.
//  2. the whole data directory copied back, mark included: only the agent
//     can tell (the server's revision went below one it applied); it
//     removes every grant, says so, and the server ends the grant.
//  3. the documented procedure: `jitgate backup` while the server runs,
//     `jitgate restore` (refused while the server runs) into the stopped
//     server's data directory.
func TestRestoreNeverReopens(t *testing.T) {
	l := newGatedLab(t)
	data := filepath.Join(l.Dir, "server")

	// grant opens 22 for src for an hour and returns the request.
	grant := func(src netip.Addr) wire.Request {
		t.Helper()
		req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "1h", "--source", src.String(), "--reason", "restore e2e", "--wait")
		if req.State != "active" || !l.canConnect(src, serverIP, 22) {
			t.Fatalf("request %s: state %s, open %v; want active and open", req.ID, req.State, l.canConnect(src, serverIP, 22))
		}
		return req
	}
	// revoke ends req and waits until the agent applied it; it returns
	// the revision the agent applied.
	revoke := func(req wire.Request, src netip.Addr) int64 {
		t.Helper()
		l.cli("revoke", req.ID, "--yes")
		l.eventually("port closed after the revoke", 5*time.Second, func() bool { return !l.canConnect(src, serverIP, 22) })
		l.waitApplied("web-01")
		return cliJSON[wire.Target](l, "target", "show", "web-01").Agent.AppliedRevision
	}
	// restartOn stops the server (SIGKILL, as a crash would), lets put
	// replace its files, and starts it again.
	restartOn := func(put func()) {
		t.Helper()
		l.Server.Kill()
		put()
		l.startServer()
	}
	// closedUntil checks that src cannot connect, again and again, until
	// the request shows ended by the restore and the agent applied a
	// revision above applied (the one it held before the restore).
	closedUntil := func(what string, src netip.Addr, req wire.Request, applied int64) {
		t.Helper()
		deadline := time.Now().Add(35 * time.Second) // beyond the 25 s long-poll wait
		for {
			if l.canConnect(src, serverIP, 22) {
				t.Fatalf("%s: %s reaches port 22 again: the restored database reopened a revoked grant", what, src)
			}
			got := cliJSON[wire.Request](l, "requests", req.ID)
			tg := cliJSON[wire.Target](l, "target", "show", "web-01")
			if got.State != "active" && strings.Contains(got.Message, "database restored") && tg.Agent.AppliedRevision > applied {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: request %s is %s (%q), agent applied revision %d (before: %d); want it ended by the restore and the agent past its old revision",
					what, req.ID, got.State, got.Message, tg.Agent.AppliedRevision, applied)
			}
		}
		for range 10 {
			if l.canConnect(src, serverIP, 22) {
				t.Fatalf("%s: %s reaches port 22 after the restore was handled", what, src)
			}
		}
		if active := cliJSON[[]wire.Request](l, "requests", "--active"); len(active) != 0 {
			t.Fatalf("%s: the API still shows %d active requests", what, len(active))
		}
	}

	t.Log("1: the database file copied back over the stopped server")
	req := grant(client1)
	old1 := t.TempDir()
	restartOn(func() { copyFiles(t, data, old1, "jitgate.db", "jitgate.db-wal") })
	applied := revoke(req, client1)
	restartOn(func() { putBack(t, old1, data, "jitgate.db", "jitgate.db-wal") })
	closedUntil("database file copied back", client1, req, applied)
	if !strings.Contains(l.Server.Output(), "database restored") {
		t.Errorf("the server did not log the restore:\n%s", l.Server.Output())
	}

	t.Log("2: the whole data directory copied back, mark included: the agent notices")
	req = grant(client2)
	old2 := t.TempDir()
	restartOn(func() { copyFiles(t, data, old2, "jitgate.db", "jitgate.db-wal", "jitgate.db.generation") })
	applied = revoke(req, client2)
	restartOn(func() { putBack(t, old2, data, "jitgate.db", "jitgate.db-wal", "jitgate.db.generation") })
	closedUntil("data directory copied back", client2, req, applied)
	if out := l.Agent.Output(); !strings.Contains(out, "revision went back") {
		t.Errorf("the agent did not say that the server's revision went back:\n%s", out)
	}
	if evs := cliJSON[[]wire.AuditEvent](l, "audit", "--action", "agent.revision_ahead"); len(evs) == 0 {
		t.Error("no agent.revision_ahead audit event")
	}

	t.Log("3: jitgate backup while the server runs, jitgate restore while it is stopped")
	req = grant(client1)
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out, err := exec.Command(l.Binary, "backup", "--data-dir", data, "--to", backup).CombinedOutput(); err != nil {
		t.Fatalf("jitgate backup: %v: %s", err, out)
	}
	applied = revoke(req, client1)
	out, err := exec.Command(l.Binary, "restore", "--data-dir", data, "--from", backup).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by a running jitgate server") {
		t.Fatalf("jitgate restore with the server running: %v: %s; want it refused", err, out)
	}
	restartOn(func() {
		if out, err := exec.Command(l.Binary, "restore", "--data-dir", data, "--from", backup).CombinedOutput(); err != nil {
			t.Fatalf("jitgate restore: %v: %s", err, out)
		}
	})
	closedUntil("jitgate restore", client1, req, applied)
}

// copyFiles copies the named files that exist from one directory to another.
func copyFiles(t *testing.T, from, to string, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// putBack replaces the named files of dir with the copies in from (removing
// those the copy lacks) and drops SQLite's shared-memory index, as an
// operator restoring files would.
func putBack(t *testing.T, from, dir string, names ...string) {
	t.Helper()
	for _, n := range append(names, "jitgate.db-shm") {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	copyFiles(t, from, dir, names...)
}
