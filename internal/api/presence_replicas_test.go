package api_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// TestPresenceAcrossReplicas: two replicas share a database; an agent's
// polls reach one at a time. The replica that does not serve the agent
// never takes it for gone while the other does; when the agent moves, its
// new replica keeps it connected; when it stops polling altogether it is
// recorded disconnected once; when it comes back to a replica that had
// recorded it connected before, it is recorded connected again. Before,
// each replica judged from its own polls alone: the other replica recorded
// the agent disconnected after the grace period, and the serving replica,
// having recorded it connected already, never wrote it back.
func TestPresenceAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "j.db")
	open := func() *store.Store {
		st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	stA, stB := open(), open()
	if _, _, err := stA.CreateTarget(ctx, store.Actor{Name: "admin"}, "web-1", nil, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	const grace = 10 * time.Second
	a, b := api.NewPresence(stA, grace), api.NewPresence(stB, grace)
	state := func() string {
		t.Helper()
		tg, err := stA.GetTarget(ctx, "web-1")
		if err != nil {
			t.Fatal(err)
		}
		return tg.AgentState
	}
	check := func(p *api.Presence, at time.Time) {
		t.Helper()
		if err := p.Check(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	// Checks run every 2 s on both replicas; the steps below are minutes
	// apart, far beyond the grace period.
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

	doneA := a.Begin("web-1")
	if err := a.MarkConnected(ctx, "web-1", "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	check(a, at(1))
	check(b, at(1))
	if s := state(); s != store.AgentConnected {
		t.Fatalf("agent polling replica a, after both checked: %s, want connected (b must not take it for gone)", s)
	}

	// The agent moves to b.
	doneA()
	doneB := b.Begin("web-1")
	if err := b.MarkConnected(ctx, "web-1", "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	check(b, at(2))
	check(a, at(2))
	if s := state(); s != store.AgentConnected {
		t.Fatalf("agent moved to b: %s, want connected", s)
	}

	// The agent stops polling.
	doneB()
	check(a, at(3))
	check(b, at(3))
	if s := state(); s != store.AgentDisconnected {
		t.Fatalf("agent polling nobody: %s, want disconnected", s)
	}
	evs, err := stA.ListAudit(ctx, store.AuditFilter{Action: string(audit.AgentDisconnected)})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Errorf("%d agent.disconnected events, want 1 (by whichever replica looked first)", len(evs))
	}

	// It comes back to a, which recorded it connected at the start.
	doneA = a.Begin("web-1")
	defer doneA()
	if err := a.MarkConnected(ctx, "web-1", "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	check(a, at(4))
	check(b, at(4))
	if s := state(); s != store.AgentConnected {
		t.Fatalf("agent back at a: %s, want connected", s)
	}
}
