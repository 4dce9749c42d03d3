package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/store"
)

// TestBackupRestoreCLI: backup copies a database in use; backup and
// restore refuse what would lose data (overwriting a file, restoring under
// a running server, restoring something that is not a database) with one
// line, and say what they did.
func TestBackupRestoreCLI(t *testing.T) {
	data := t.TempDir()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(data, "jitgate.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	release, err := server.LockDataDir(data) // as a running server holds it
	if err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": t.TempDir()}}
	backup := filepath.Join(t.TempDir(), "b.db")
	c.ok("backup", "--data-dir", data, "--to", backup)
	checkOneLineError(t, c.run("backup", "--data-dir", data, "--to", backup), "exists")
	checkOneLineError(t, c.run("restore", "--data-dir", data, "--from", backup), "in use by a running jitgate server")
	release()

	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	stopped := t.TempDir()
	checkOneLineError(t, c.run("restore", "--data-dir", stopped, "--from", junk), "not a sound jitgate database")
	r := c.ok("restore", "--data-dir", stopped, "--from", backup)
	if _, err := os.Stat(filepath.Join(stopped, "jitgate.db")); err != nil || r.stdout == "" {
		t.Errorf("restore: %v, stdout %q; want the database in place and a line saying so", err, r.stdout)
	}
}
