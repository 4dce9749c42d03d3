package main

import (
	"database/sql"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/store"
)

func TestAudit(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("target", "add", "db-01")
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.100.0/24")

	r := c.ok("audit", "--actor", "admin", "--since", "1h", "--until", "2099-01-01T00:00:00Z", "-o", "json")
	listed := decode[[]struct {
		Actor  string `json:"actor"`
		Target string `json:"target"`
	}](t, r.stdout)
	if len(listed) < 3 {
		t.Fatalf("audit --actor admin listed %d events, want at least 3: %s", len(listed), r.stdout)
	}
	if r := c.ok("audit", "--until", "1h"); r.stdout != "" || !strings.Contains(r.stderr, "no audit events") {
		t.Errorf("audit --until 1h (an hour ago): stdout %q, stderr %q; want no events", r.stdout, r.stderr)
	}

	r = c.ok("audit", "verify")
	if !strings.HasPrefix(r.stdout, "audit chain intact: ") || !strings.Contains(r.stdout, " events") {
		t.Errorf("audit verify: %q", r.stdout)
	}

	// JSON lines to standard output: one event per line.
	r = c.ok("audit", "export", "--actor", "admin")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != len(listed) || !strings.HasPrefix(lines[0], `{"id":`) {
		t.Errorf("export: %d lines, want %d JSON objects:\n%s", len(lines), len(listed), r.stdout)
	}

	// CSV to a file, owner-only, filtered.
	file := filepath.Join(t.TempDir(), "audit.csv")
	c.ok("audit", "export", "--format", "csv", "-f", file, "--target", "web-01", "--action", "policy.set")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, want 0600", fi.Mode().Perm())
	}
	f, _ := os.Open(file)
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(recs) != 2 || recs[0][0] != "id" || recs[1][3] != "policy.set" || recs[1][4] != "web-01" {
		t.Errorf("CSV export = %q, %v; want a header and one policy.set row", recs, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".audit.csv.*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	for _, args := range [][]string{
		{"audit", "export", "--format", "xml"},
		{"audit", "--since", "yesterday"},
		{"audit", "--since", "1h", "--until", "2h"},
		{"audit", "verfiy"},
	} {
		r := c.run(args...)
		if r.code != exitUsage {
			t.Errorf("jitgate %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), r.code, exitUsage, r.stderr)
		}
		checkErrorLine(t, r, 2)
	}
}

func TestAuditVerifyBroken(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("target", "add", "db-01")

	// newTestServer keeps its database in a sibling of this temporary
	// directory.
	paths, _ := filepath.Glob(filepath.Join(filepath.Dir(t.TempDir()), "*", "jitgate.db"))
	if len(paths) != 1 {
		t.Fatalf("found databases %v, want one", paths)
	}
	db, err := sql.Open("sqlite", store.SQLiteDSN(paths[0], "_pragma=busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit SET target = 'mail-01' WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	r := c.run("audit", "verify")
	checkOneLineError(t, r, "audit chain broken", "event 2 was altered")
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	r = c.run("audit", "verify", "-o", "json")
	if r.code != exitError || !strings.Contains(r.stdout, `"first_bad_id": 2`) {
		t.Errorf("verify -o json: exit %d, stdout %q; want 1 and first_bad_id 2", r.code, r.stdout)
	}
}
