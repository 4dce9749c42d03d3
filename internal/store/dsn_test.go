package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/jitgate/jitgate/internal/store"
)

func TestSQLiteDSN(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/var/lib/jitgate/jitgate.db", "file:///var/lib/jitgate/jitgate.db"},
		{"/d/a#b?c%d e/x.db", "file:///d/a%23b%3Fc%25d%20e/x.db"},
		{"//host/x.db", "file:////host/x.db"}, // not an authority
		{"rel/x.db", "file:rel/x.db"},
		{"/d/a&b=c;é", "file:///d/a%26b%3Dc%3B%C3%A9"},
	} {
		if got := store.SQLiteDSN(tc.path); got != tc.want {
			t.Errorf("SQLiteDSN(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := store.SQLiteDSN("/x.db", "mode=ro", "_pragma=busy_timeout(5000)"); got != "file:///x.db?mode=ro&_pragma=busy_timeout(5000)" {
		t.Errorf("with parameters: %q", got)
	}
}

// TestSQLiteOddDataDir: a data directory whose name holds the characters
// that end or escape a path in an SQLite URI ('#', '?', '%', ' ') still
// gets its database in that directory, not in a file named after a prefix
// of it; reopening finds the data, and backup and restore work there too.
func TestSQLiteOddDataDir(t *testing.T) {
	for _, name := range []string{"a#b?c%d e", "a%23b", "file:x"} {
		for _, relative := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s relative=%v", name, relative), func(t *testing.T) { oddDataDir(t, name, relative) })
		}
	}
}

func oddDataDir(t *testing.T, name string, relative bool) {
	ctx := t.Context()
	root := t.TempDir()
	dir := filepath.Join(root, name)
	if relative {
		// A relative "file:x/..." is what SQLite reads as a URI.
		t.Chdir(root)
		dir = name
	}
	path := filepath.Join(dir, "jitgate.db")
	s := openSQLite(t, path)
	_, _, req := seed(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != name {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %q, want only the data directory %q", root, names, name)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("database file %s: %v, %v; want it written there", path, fi, err)
	}

	s = openSQLite(t, path)
	if got, err := s.GetRequest(ctx, req.ID); err != nil || got.ID != req.ID {
		t.Fatalf("after reopening: request %s = %+v, %v; want it found", req.ID, got, err)
	}
	backup := filepath.Join(dir, "backup #1.db")
	if err := store.BackupSQLite(ctx, path, backup, t0); err != nil {
		t.Fatalf("BackupSQLite: %v", err)
	}
	s.Close()
	if _, err := store.RestoreSQLite(ctx, backup, path, t0); err != nil {
		t.Fatalf("RestoreSQLite: %v", err)
	}
	s = openSQLite(t, path)
	defer s.Close()
	if got, err := s.GetRequest(ctx, req.ID); err != nil || got.ID != req.ID {
		t.Fatalf("after restoring: request %s = %+v, %v; want it found", req.ID, got, err)
	}
	if _, marked, _ := s.RestoreMarked(ctx); !marked {
		t.Error("restored database not marked as a restore")
	}
}
