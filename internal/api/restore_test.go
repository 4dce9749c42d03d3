package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestAgentAheadOfDatabase: an agent that already applied a higher revision
// than the server holds (the database was restored from an older copy) gets
// the desired state at once instead of waiting out its long-poll, and its
// report with high_water ends the target's live grants and moves the
// revision past the agent's, so its next poll brings a state without them.
func TestAgentAheadOfDatabase(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "my-ip",
		Duration: wire.Duration(30 * time.Minute), Reason: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
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
