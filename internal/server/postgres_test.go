package server

import (
	"context"
	"database/sql"
	"log/slog"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

// TestRunOnPostgres: with Database set the server keeps its state in that
// PostgreSQL database, not in the data directory: a second server on the
// same database (another data directory, as another host's replica) serves
// what the first one wrote, and writes to the same audit chain.
func TestRunOnPostgres(t *testing.T) {
	ctx := t.Context()
	url := testenv.Postgres(t)
	dirA := t.TempDir()
	addrA, token := serve(t, Config{Database: url, DataDir: dirA}, nil)
	if token == "" {
		t.Fatal("the first server on an empty database wrote no admin token")
	}
	a, err := client.New("http://"+addrA, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}

	// Another data directory, the same SSH CA key (TestSSHCAAcrossReplicas).
	addrB, tokenB := serve(t, Config{Database: url, SSHCAKeyFile: filepath.Join(dirA, "ssh_ca_ed25519")}, nil)
	if tokenB != "" {
		t.Error("a second server on a database that has an admin token made another one")
	}
	b, err := client.New("http://"+addrB, token)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := b.Targets(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "web-01" {
		t.Fatalf("targets through the second server: %v, %v; want web-01", ts, err)
	}
	if _, err := b.CreateTarget(ctx, wire.TargetCreate{Name: "web-02"}); err != nil {
		t.Fatal(err)
	}
	if ts, err := a.Targets(ctx); err != nil || len(ts) != 2 {
		t.Fatalf("targets through the first server: %v, %v; want web-01 and web-02", ts, err)
	}
	v, err := a.VerifyAudit(ctx)
	if err != nil || !v.OK {
		t.Fatalf("audit verify after writes through both servers: %+v, %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "jitgate.db")); err == nil {
		t.Error("an SQLite file was created beside a PostgreSQL database")
	}
}

// openGuardedPG opens the PostgreSQL database at url as Run does with
// Database set: restore guard first (its mark in dir), then the mark kept
// current after every change.
func openGuardedPG(t *testing.T, dir, url string, log *slog.Logger) *store.Store {
	t.Helper()
	st, err := store.OpenPostgres(t.Context(), url, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return guarded(t, st, dir, log)
}

// copyPGDatabase copies the database at url (no connection may be open to
// it) into a new database on the same server, as a backup taken then, and
// returns the copy's URL; the copy is dropped when the test ends.
func copyPGDatabase(t *testing.T, url string) string {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	copyName := name + "_copy"
	admin := *u
	admin.Path = "/postgres"
	db, err := sql.Open("pgx", admin.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), `CREATE DATABASE `+copyName+` TEMPLATE `+name); err != nil {
		t.Fatalf("copying database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", admin.String())
		if err == nil {
			db.Exec(`DROP DATABASE IF EXISTS ` + copyName + ` WITH (FORCE)`)
			db.Close()
		}
	})
	u.Path = "/" + copyName
	return u.String()
}

// TestRestoreGuardOnPostgres: the restore guard holds for PostgreSQL as for
// SQLite. A database put back from a copy taken while a grant was live,
// after the grant was revoked, is caught by the data directory's mark: the
// start ends the grant and lifts the revision above what was served. A
// restore onto a replica with a fresh data directory (no mark) is caught by
// the mark jitgate restore --database sets (MarkRestored).
func TestRestoreGuardOnPostgres(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()
	url := testenv.Postgres(t)

	st := openGuardedPG(t, dir, url, log)
	gateWeb1(t, st, now)
	req := requestWeb1(t, st, "198.51.100.7/32", now)
	if _, err := st.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", now); err != nil {
		t.Fatal(err)
	}
	st.Close()
	backup := copyPGDatabase(t, url) // the grant is live in it
	backup2 := copyPGDatabase(t, backup)

	st = openGuardedPG(t, dir, url, log)
	if _, err := st.RevokeRequest(ctx, guardActor, req.ID, "done", now); err != nil {
		t.Fatal(err)
	}
	revokedAt, _, _, err := st.DesiredState(ctx, "web-1", now)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	for _, tc := range []struct {
		name string
		dir  string
		url  string
		mark bool
	}{
		{"older copy, same data directory", dir, backup, false},
		{"marked copy, new data directory", t.TempDir(), backup2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mark {
				st, err := store.OpenPostgres(ctx, tc.url, store.DefaultConfig())
				if err != nil {
					t.Fatal(err)
				}
				if err := st.MarkRestored(ctx, now); err != nil {
					t.Fatal(err)
				}
				st.Close()
			}
			st := openGuardedPG(t, tc.dir, tc.url, log)
			defer st.Close()
			wantRestoreEnded(t, st, req.ID, revokedAt, now)
		})
	}
}

// startErr runs a server with cfg that must refuse to start, and returns
// its error.
func startErr(t *testing.T, cfg Config) error {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg.Ready = func(string) { cancel() }
	err := Run(ctx, cfg)
	if err == nil {
		t.Fatalf("a server with data directory %s and CA key file %q started; want it refused", cfg.DataDir, cfg.SSHCAKeyFile)
	}
	return err
}

// TestSSHCAAcrossReplicas: replicas of one database sign SSH certificates
// with one CA key. The first server records its key's public half in the
// database; a second server (another data directory) with a key of its own
// refuses to start and says to copy the file or name a shared one; given
// the first one's file with --ssh-ca-key-file it starts and serves the same
// CA key. --ssh-ca-rotate records a new key, audited, after which a server
// with the old key is refused in turn. Before, the second server started
// and signed with a different key.
func TestSSHCAAcrossReplicas(t *testing.T) {
	ctx := t.Context()
	url := testenv.Postgres(t)
	dirA := t.TempDir()
	addrA, token := serve(t, Config{Database: url, DataDir: dirA}, nil)
	keyA := filepath.Join(dirA, "ssh_ca_ed25519")

	err := startErr(t, Config{Database: url, DataDir: t.TempDir()})
	for _, want := range []string{"SSH CA key", "not the key the other servers of this database sign with", "copy the ssh_ca_ed25519 file", "--ssh-ca-key-file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second server with its own key: %v; want it to say %q", err, want)
		}
	}

	addrB, _ := serve(t, Config{Database: url, DataDir: t.TempDir(), SSHCAKeyFile: keyA}, nil)
	var keys []string
	for _, addr := range []string{addrA, addrB} {
		c, err := client.New("http://"+addr, token)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := c.SSHCA(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ca.PublicKey)
	}
	if keys[0] != keys[1] || keys[0] == "" {
		t.Fatalf("CA keys served by the two replicas: %q; want one key", keys)
	}

	// Rotation: a server with a new key and --ssh-ca-rotate records it.
	dirC := t.TempDir()
	addrC, _ := serve(t, Config{Database: url, DataDir: dirC, SSHCARotate: true}, nil)
	c, err := client.New("http://"+addrC, token)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err := c.SSHCA(ctx); err != nil || ca.PublicKey == keys[0] {
		t.Fatalf("CA key after the rotation: %q, %v; want a new one", ca.PublicKey, err)
	}
	events, err := c.Audit(ctx, client.AuditFilter{Action: "ssh.ca_replaced"})
	if err != nil || len(events) != 1 {
		t.Fatalf("ssh.ca_replaced events: %+v, %v; want one", events, err)
	}
	err = startErr(t, Config{Database: url, DataDir: t.TempDir(), SSHCAKeyFile: keyA})
	if !strings.Contains(err.Error(), "not the key the other servers") {
		t.Errorf("a server with the key rotated out: %v; want it refused", err)
	}
	serve(t, Config{Database: url, DataDir: t.TempDir(), SSHCAKeyFile: filepath.Join(dirC, "ssh_ca_ed25519")}, nil)
}

// TestRestoreGuardGenerationBackOnPostgres: a running server whose database's
// generation goes below one it already noted (PostgreSQL failed over to a
// standby that missed the last commits; here the count is set back by hand,
// the simplest such database) ends every live grant at the next change,
// before the agents are woken, as a start on an older copy does: a
// generation never goes down otherwise. Before, the guard's note ignored a
// lower generation (it only ever raised its mark).
func TestRestoreGuardGenerationBackOnPostgres(t *testing.T) {
	ctx := t.Context()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()
	url := testenv.Postgres(t)
	st := openGuardedPG(t, t.TempDir(), url, log)
	defer st.Close()
	gateWeb1(t, st, now)
	req := requestWeb1(t, st, "198.51.100.7/32", now)
	if _, err := st.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", now); err != nil {
		t.Fatal(err)
	}
	served, _, _, err := st.DesiredState(ctx, "web-1", now)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE store_meta SET value = value - 3 WHERE key = 'generation'`); err != nil {
		t.Fatal(err)
	}
	requestWeb1(t, st, "198.51.100.8/32", now)
	wantRestoreEnded(t, st, req.ID, served, now)
	if !strings.Contains(logs.String(), "the database went back under the running server") {
		t.Errorf("the database going back was not logged:\n%s", logs.String())
	}
}
