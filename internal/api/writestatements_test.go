package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestRequestWriteStatements counts the SQLite statements of the two writes
// every request makes on the load benchmark's path (issue 13, 1,000
// requests/s): its creation through the API, and the agent's report that
// activates it. Statements, not rows, are what the server's CPU went to
// (docs/benchmarks.md §14): each one is database/sql's and SQLite's work.
// Each audit event is one insert with its id and hash (an insert, then an
// UPDATE with the hash, before), and the webhooks are read only when there
// are some (the chain-head read says). The request row is inserted with its
// grant's values and returned by its insert (an insert, an UPDATE and a
// read before); a new grant is one insert (a read and an insert), logged
// with its revision's kind in one statement (two), and the change log is
// pruned every 64 revisions (each before). The report's update of its
// target returns the server's revision (a read, then the update before),
// the removals it confirms are one read (two), and the requests it
// activates are read, moved and returned by one UPDATE (a read of the
// pending requests, then an UPDATE returning each, before; read again
// after the commit before that). The audit chain's head is read once per
// transaction (store.TestBatchedRequestStatements counts a batch), so a
// write alone in its transaction, as here, still reads it.
func TestRequestWriteStatements(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	cur, err := agent.DesiredSince(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: cur.Revision}); err != nil {
		t.Fatal(err)
	}
	before := e.st.Queries()
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	create := e.st.Queries() - before
	d, err := agent.DesiredSince(ctx, cur.Revision, cur.Revision, 0)
	if err != nil || len(d.Grants) != 1 {
		t.Fatalf("delta: %+v, %v", d, err)
	}
	before = e.st.Queries()
	// As the agent sends it: with the host's addresses and its version
	// (agent.finish), every time.
	if err := agent.Report(ctx, wire.AgentReport{Revision: d.Revision, Addresses: []string{"198.51.100.10"}, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	report := e.st.Queries() - before
	got, err := e.c.Request(ctx, r.ID)
	if err != nil || got.State != "active" {
		t.Fatalf("request after the report: %+v, %v; want active", got, err)
	}
	t.Logf("statements: create %d, report %d", create, report)
	// Before: create 21, report 13, then 15 and 9 (§14.1), then 13 and 7,
	// then 13 and 6 (§17); each includes the restore guard's read of the
	// generation at the start of its batch (026360c), one per batch, not
	// per operation, under load. Then (§26) the target, its live counts and
	// its relations for the wake-up one read (three: two in the
	// transaction, one after the commit), and the unconfirmed removals
	// read only when the report's update of its target says some wait.
	// Then the agent's addresses and version, which it sends with every
	// report, written by the report's update of its target (two updates of
	// their own before: 7 statements, which this test did not see while
	// its report carried neither).
	const maxCreate, maxReport = 11, 5
	if create > maxCreate {
		t.Errorf("creating a request took %d statements, want at most %d", create, maxCreate)
	}
	if report > maxReport {
		t.Errorf("the report that activated it took %d statements, want at most %d", report, maxReport)
	}
}
