package api_test

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// asServerRuns gives the API the revisions the server started with, as
// the server does (none here: every target is new), which turns on the
// check of agents claiming revisions never served.
func asServerRuns(d *api.Deps) { d.RevisionsAtStart = map[string]int64{} }

// TestAgentAheadOfDatabase: an agent that already applied a higher revision
// than the server holds (the database was restored from an older copy) gets
// the desired state at once instead of waiting out its long-poll, and its
// report with high_water ends the target's live grants and moves the
// revision past the agent's, so its next poll brings a state without them.
func TestAgentAheadOfDatabase(t *testing.T) {
	e, agent, req, ds := grantedWeb01(t)
	ctx := context.Background()
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}

	// The agent had applied revision ds.Revision+10 before the restore.
	hw := ds.Revision + 10
	// A server waiting out the 20 s long-poll would run into the 10 s bound.
	pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	back, err := agent.Desired(pollCtx, hw, 20*time.Second)
	if err != nil || back.Revision != ds.Revision {
		t.Fatalf("poll after=%d: revision %d, %v; want revision %d at once, not after the wait", hw, back.Revision, err, ds.Revision)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: back.Revision, Error: "refusing revision: went back", HighWater: hw}); err != nil {
		t.Fatalf("Report with high_water: %v", err)
	}
	got, err := e.c.Request(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "revoked" || !strings.Contains(got.Message, "database restored") {
		t.Errorf("request after the agent's report: %s %q, want revoked by the restore", got.State, got.Message)
	}
	next, err := agent.Desired(ctx, hw, 0)
	if err != nil {
		t.Fatal(err)
	}
	if next.Revision <= hw || len(next.Grants) != 0 {
		t.Errorf("desired state after the report: revision %d with %d grants, want above %d with none", next.Revision, len(next.Grants), hw)
	}
}

// TestAgentAheadAfterTheDatabaseCaughtUp: the database went back and later
// changes already reused the revision number the agent applied, so the
// agent cannot see anything wrong. The server can: the agent's poll claims a
// revision this server process never had at start nor served. It ends the
// target's live grants before answering, and answers a revision above both.
func TestAgentAheadAfterTheDatabaseCaughtUp(t *testing.T) {
	e, agent, old, ds := grantedWeb01With(t, asServerRuns, "127.0.0.1/32", "in the restored copy, revoked since")
	ctx := context.Background()
	// A change the server has not sent yet takes the next revision number,
	// which the agent had applied (with other contents) before the restore.
	e.requestWeb01(t, "127.0.0.2/32", "new")
	reused := ds.Revision + 1
	got, err := agent.Desired(ctx, reused, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision <= reused || len(got.Grants) != 0 {
		t.Errorf("answer to an agent at revision %d: revision %d with grants %+v; want a higher revision without the restored grants", reused, got.Revision, got.Grants)
	}
	r, err := e.c.Request(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != "revoked" || !strings.Contains(r.Message, "database restored") {
		t.Errorf("restored request: %s %q, want revoked by the restore", r.State, r.Message)
	}

	// A normal poll afterwards changes nothing more.
	e.requestWeb01(t, "127.0.0.3/32", "after")
	next, err := agent.Desired(ctx, got.Revision, 0)
	if err != nil || len(next.Grants) != 1 {
		t.Errorf("next poll: %+v, %v; want the new grant", next, err)
	}
}

// TestAgentClaimAboveMaxRevisionRefused: a compromised agent (or a tampered
// applied-revision file) claims a revision near the int64 limit. Lifting the
// target's revision and the database generation above it overflowed: the
// generation saturated, which disabled the restore guard of every target.
// The claim is refused with 422 and nothing changes.
func TestAgentClaimAboveMaxRevisionRefused(t *testing.T) {
	e, agent, req, ds := grantedWeb01(t)
	ctx := context.Background()
	for _, hw := range []int64{wire.MaxRevision + 1, math.MaxInt64 - 5, math.MaxInt64} {
		err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Error: "refusing revision: went back", HighWater: hw})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || !strings.Contains(ae.Error(), "high_water") {
			t.Errorf("report with high_water %d = %v, want 422 naming high_water", hw, err)
		}
	}
	if _, err := agent.Desired(ctx, math.MaxInt64, 0); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("poll after=MaxInt64: %v, want 422", err)
	}
	next, err := agent.Desired(ctx, 0, 0)
	if err != nil || next.Revision != ds.Revision || len(next.Grants) != 1 {
		t.Errorf("desired state after the refused claims: %+v, %v; want revision %d with the grant", next, err, ds.Revision)
	}
	if got, err := e.c.Request(ctx, req.ID); err != nil || got.State == "revoked" {
		t.Errorf("request after the refused claims: %+v, %v; want it untouched", got, err)
	}
}

// TestRestoreLiftsGatewayPolicyRemovalOnce: the policy removal of a target
// behind a gateway waits for a revision of the gateway. A restore lifts every
// target's revision, the gateway's and the target's; the removal was lifted
// for both, twice as far as the gateway's revision, so it stayed unconfirmed
// after the gateway applied the revision without the policy.
func TestRestoreLiftsGatewayPolicyRemovalOnce(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	if err := e.c.RemovePolicy(ctx, "db-01"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EndRestored(ctx, 5, "restored in a test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ds, err := gw.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	tg, err := e.c.Target(ctx, "db-01")
	if err != nil {
		t.Fatal(err)
	}
	if tg.PolicyRemoval == nil || tg.PolicyRemoval.State != "confirmed" {
		t.Errorf("policy removal after the gateway applied revision %d: %+v, want confirmed", ds.Revision, tg.PolicyRemoval)
	}
}

// TestAgentAheadOfWhatThisServerServed: the database goes back under a
// running server (PostgreSQL failed over to a standby that had not received
// the last commits, or a dump put back while the servers ran). The agent had
// applied a revision this very server process sent it, so the revision is
// not above what the process knows; but it is above the database's own, and
// a committed revision never goes down, so the database went back all the
// same. The agent's report must end what the database brought back and lift
// the revision above the agent's, as for a restore found at start. Before,
// the server ignored the claim: the agent was answered the lower revision at
// once on every poll, the restored grants stayed live, and the next change
// reused the agent's revision number with other contents.
func TestAgentAheadOfWhatThisServerServed(t *testing.T) {
	// As the server runs it: knowing the revisions it started with.
	e, agent, req, ds := grantedWeb01With(t, asServerRuns, "127.0.0.1/32", "live before and after")
	ctx := context.Background()
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	// A second change, served by this process and applied by the agent.
	e.requestWeb01(t, "127.0.0.2/32", "lost in the failover")
	ds2, err := agent.Desired(ctx, ds.Revision, 0)
	if err != nil || ds2.Revision <= ds.Revision {
		t.Fatalf("second desired state: %+v, %v", ds2, err)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds2.Revision}); err != nil {
		t.Fatal(err)
	}

	// The database goes back to the first revision behind the server.
	db, err := sql.Open("sqlite", e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE targets SET revision = $1 WHERE name = 'web-01'`, ds.Revision); err != nil {
		t.Fatal(err)
	}

	back, err := agent.Desired(ctx, ds2.Revision, 0)
	if err != nil || back.Revision != ds.Revision {
		t.Fatalf("poll after=%d: revision %d, %v; want the database's %d", ds2.Revision, back.Revision, err, ds.Revision)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: back.Revision, Error: "refusing revision: went back", HighWater: ds2.Revision}); err != nil {
		t.Fatalf("Report with high_water: %v", err)
	}
	got, err := e.c.Request(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "revoked" || !strings.Contains(got.Message, "database restored") {
		t.Errorf("request after the agent's report: %s %q, want revoked by the restore", got.State, got.Message)
	}
	next, err := agent.Desired(ctx, ds2.Revision, 0)
	if err != nil || next.Revision <= ds2.Revision || len(next.Grants) != 0 {
		t.Errorf("desired state after the report: %+v, %v; want a revision above %d with no grant", next, err, ds2.Revision)
	}
}
