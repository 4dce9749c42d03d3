package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
)

// testRelayRoutes covers what several server replicas share: a replica is live
// while its heartbeat is fresh; a relay route is found only on live
// replicas other than the asker's, newest connection first, and a stale
// connection's removal leaves a newer route; a starting replica ends its
// own sessions, those of no replica and those of dead replicas, never those
// of a live one; SessionsEnded reports sessions ended elsewhere.
func testRelayRoutes(t *testing.T, s *store.Store) {
	ctx := t.Context()
	const ttl = 30 * time.Second
	for _, r := range []struct{ id, addr string }{{"A", "http://a.internal"}, {"B", "http://b.internal"}, {"C", ""}} {
		if err := s.HeartbeatReplica(ctx, r.id, r.addr, t0, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetRelayRoute(ctx, "web-1", "A", "c1", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRelayRoute(ctx, "web-1", "B", "c2", at(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRelayRoute(ctx, "web-1", "C", "c3", at(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	routes := func(self string, now time.Time) []string {
		t.Helper()
		rs, err := s.RelayRoutes(ctx, "web-1", self, now)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Replica+"="+r.Address)
		}
		return out
	}
	if live, err := s.OtherReplicasLive(ctx, "A", at(time.Second)); err != nil || !live {
		t.Errorf("OtherReplicasLive(A) = %v, %v; want true (B and C beat)", live, err)
	}
	// C has no address: nothing can be forwarded to it.
	if got := routes("Z", at(time.Second)); !slices.Equal(got, []string{"B=http://b.internal", "A=http://a.internal"}) {
		t.Errorf("routes = %q, want B then A", got)
	}
	if got := routes("B", at(time.Second)); !slices.Equal(got, []string{"A=http://a.internal"}) {
		t.Errorf("routes seen by B = %q, want only A (never itself)", got)
	}
	// A reconnect on A replaces its route; the old connection's late
	// removal leaves it.
	if err := s.SetRelayRoute(ctx, "web-1", "A", "c4", at(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRelayRoute(ctx, "web-1", "A", "c1"); err != nil {
		t.Fatal(err)
	}
	if got := routes("Z", at(3*time.Second)); !slices.Equal(got, []string{"A=http://a.internal", "B=http://b.internal"}) {
		t.Errorf("routes after A's reconnect = %q, want A then B", got)
	}
	// B keeps beating, A does not: A's route is no longer offered.
	if err := s.HeartbeatReplica(ctx, "B", "http://b.internal", at(20*time.Second), ttl); err != nil {
		t.Fatal(err)
	}
	if got := routes("Z", at(40*time.Second)); !slices.Equal(got, []string{"B=http://b.internal"}) {
		t.Errorf("routes once A is dead = %q, want only B", got)
	}

	start := func(replica string) session.Session {
		t.Helper()
		x := session.Session{ID: store.NewSessionID(), Target: "web-1", Principal: "alice", RequestID: "r-1", Protocol: "tcp", Port: 22,
			StartedAt: t0, Deadline: at(time.Hour), State: session.Live, Replica: replica}
		if err := s.StartSession(ctx, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	onA, onB, onC, legacy := start("A"), start("B"), start("C"), start("")
	// C restarts at 40 s: its own sessions, A's (dead) and the legacy one
	// end; B's (live) stays.
	n, err := s.EndLostSessions(ctx, "C", at(40*time.Second))
	if err != nil || n != 3 {
		t.Fatalf("EndLostSessions = %d, %v; want 3", n, err)
	}
	for _, x := range []session.Session{onA, onC, legacy} {
		if got, _ := s.GetSession(ctx, x.ID); got.State != session.Ended || got.Reason != session.ServerLost {
			t.Errorf("session of replica %q = %s %s, want ended server_lost", x.Replica, got.State, got.Reason)
		}
	}
	if got, _ := s.GetSession(ctx, onB.ID); got.State != session.Live {
		t.Errorf("a live replica's session was ended: %+v", got)
	}
	ended, err := s.SessionsEnded(ctx, []string{onA.ID, onB.ID, "s-unknown"})
	if err != nil || len(ended) != 1 || ended[0].ID != onA.ID {
		t.Errorf("SessionsEnded = %+v, %v; want only %s", ended, err, onA.ID)
	}
	if n, err := s.EndReplicaSessions(ctx, "B", session.ServerLost, at(41*time.Second)); err != nil || n != 1 {
		t.Errorf("EndReplicaSessions(B) = %d, %v; want 1", n, err)
	}
	if err := s.SweepReplicas(ctx, at(40*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := routes("Z", at(40*time.Second)); !slices.Equal(got, []string{"B=http://b.internal"}) {
		t.Errorf("routes after the sweep = %q, want only B", got)
	}
	if err := s.RemoveReplica(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if live, err := s.OtherReplicasLive(ctx, "Z", at(41*time.Second)); err != nil || live {
		t.Errorf("OtherReplicasLive once B stopped and A and C are dead = %v, %v; want false", live, err)
	}
	if got := routes("Z", at(41*time.Second)); len(got) != 0 {
		t.Errorf("routes after B stopped = %q, want none", got)
	}
}
