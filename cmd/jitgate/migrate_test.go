package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestMain stops the PostgreSQL server the tests started (testenv.Postgres).
func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

// TestMigrateCLI moves a populated SQLite database (requests active,
// awaiting approval, approved, denied and revoked; tokens; the audit trail)
// into PostgreSQL with jitgate migrate, then serves it with a real server on
// --database: the admin token still works, the requests are there, and the
// audit chain verifies. migrate refuses a server's data directory in use, a
// database that is not empty, and bad arguments, with one line each.
func TestMigrateCLI(t *testing.T) {
	ctx := t.Context()
	data := t.TempDir()
	path := filepath.Join(data, "jitgate.db")
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	admin := populateForMigration(t, st)
	want, err := st.VerifyAudit(ctx)
	if err != nil || !want.OK {
		t.Fatalf("source audit: %+v, %v", want, err)
	}
	st.Close()
	url := testenv.Postgres(t)
	c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": t.TempDir()}}

	release, err := server.LockDataDir(data) // as a running server holds it
	if err != nil {
		t.Fatal(err)
	}
	checkOneLineError(t, c.run("migrate", "--from", "sqlite:"+path, "--to", url), "in use by a running jitgate server")
	release()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--from", path, "--to", url}, "want sqlite:PATH"},
		{[]string{"migrate", "--from", "sqlite:" + path, "--to", "mysql://x"}, "postgres://"},
	} {
		r := c.run(tc.args...)
		if r.code != exitUsage {
			t.Errorf("jitgate %v: exit %d, want %d", tc.args, r.code, exitUsage)
		}
		checkErrorLine(t, r, 2, tc.want) // the error and the --help hint
	}

	r := c.ok("migrate", "--from", "sqlite:"+path, "--to", url)
	if !strings.Contains(r.stdout, fmt.Sprintf("audit chain verified: %d events, head %s", want.Events, want.Head)) {
		t.Errorf("migrate said %q; want the verified chain of %d events, head %s", r.stdout, want.Events, want.Head)
	}
	checkOneLineError(t, c.run("migrate", "--from", "sqlite:"+path, "--to", url), "not empty")

	// A real server on the PostgreSQL database serves the copy.
	sctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- server.Run(sctx, server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Database: url,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(a string) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("server on the migrated database: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server on the migrated database did not start")
	}
	c.env["JITGATE_SERVER"], c.env["JITGATE_TOKEN"] = "http://"+addr, admin
	r = c.ok("audit", "verify", "-o", "json")
	v := decode[struct {
		OK     bool `json:"ok"`
		Events int  `json:"events"`
	}](t, r.stdout)
	if !v.OK || v.Events < want.Events {
		t.Errorf("audit verify on the migrated database: %s; want ok with at least %d events", r.stdout, want.Events)
	}
	r = c.ok("requests", "-o", "json")
	reqs := decode[[]struct{ State string }](t, r.stdout)
	states := map[string]int{}
	for _, q := range reqs {
		states[q.State]++
	}
	for _, s := range []string{"active", "pending_approval", "denied", "revoked"} {
		if states[s] == 0 {
			t.Errorf("no %s request after the migration: %v", s, states)
		}
	}
}

// populateForMigration fills st through the store as a server would and
// returns an admin token.
func populateForMigration(t *testing.T, st *store.Store) string {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	alice := store.Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	admin, err := st.CreateAdminToken(ctx, alice, "alice", now)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22}},
		{Port: policy.Port{Number: 5432}, Approval: policy.Approval{Mode: policy.Manual}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateTarget(ctx, alice, "web-01", nil, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetPolicy(ctx, alice, "web-01", pol, now); err != nil {
		t.Fatal(err)
	}
	// erin's request is approved: the approval asks whether she may ask.
	if _, err := st.CreateBinding(ctx, alice, authz.Binding{Principal: "user:erin", Role: authz.Requester, Scope: authz.Everywhere}, now); err != nil {
		t.Fatal(err)
	}
	ask := func(who string, port uint16, src string) store.Request {
		t.Helper()
		r, err := st.CreateRequest(ctx, store.Actor{Name: who}, "web-01", policy.Request{Ports: []policy.Port{{Number: port, Protocol: policy.TCP}},
			Source: netip.MustParsePrefix(src), Duration: time.Hour, Reason: "before the migration"}, policy.DefaultLimits(), now)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	active := ask("bob", 22, "198.51.100.7/32")
	if _, err := st.ReportApplied(ctx, "web-01", active.Revision, "", nil, "1.0.0", now); err != nil {
		t.Fatal(err)
	}
	ask("carol", 5432, "198.51.100.8/32") // awaits approval
	denied := ask("dave", 5432, "198.51.100.9/32")
	if _, err := st.DenyRequest(ctx, alice, denied.ID, "no", 0, now); err != nil {
		t.Fatal(err)
	}
	approved := ask("erin", 5432, "198.51.100.10/32")
	if _, err := st.ApproveRequest(ctx, alice, approved.ID, "ok", 0, now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RevokeRequest(ctx, alice, approved.ID, "done", now); err != nil {
		t.Fatal(err)
	}
	return admin
}
