package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// testBlocked: an agent's blocked-attempt counters replace the previous
// ones (they are cumulative in the kernel), sampled sources add up per
// hour, and a source reaching store.DefaultBruteForceThreshold attempts
// within an hour raises one attack.suspected event, at most once an hour.
func testBlocked(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	report := func(now time.Time, packets uint64, sources ...store.BlockedSource) {
		t.Helper()
		r := store.AgentReport{Blocked: []store.BlockedCounter{{Protocol: "tcp", Port: 22, Packets: packets, Connections: packets / 2}}, BlockedSources: sources}
		if err := s.RecordAgentReport(ctx, "web-1", r, now); err != nil {
			t.Fatalf("RecordAgentReport at %s: %v", now, err)
		}
	}
	src := func(addr string, n int, seen time.Time) store.BlockedSource {
		return store.BlockedSource{Source: addr, Protocol: "tcp", Port: 22, Count: n, LastSeen: seen}
	}
	alerts := func() []string {
		t.Helper()
		es, err := s.ListAudit(ctx, store.AuditFilter{Target: "web-1", Action: string(audit.BruteForceSuspected)})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.At.Sub(t0).String()+" "+e.Details["source"].(string))
		}
		return out
	}

	report(at(time.Minute), 30, src("203.0.113.9", 15, at(time.Minute)), src("203.0.113.10", 2, at(time.Minute)))
	if got := alerts(); len(got) != 0 {
		t.Errorf("alerts after 15 attempts: %v, want none", got)
	}
	report(at(10*time.Minute), 40, src("203.0.113.9", 6, at(10*time.Minute)))
	report(at(20*time.Minute), 90, src("203.0.113.9", 30, at(20*time.Minute)))
	if diff := cmp.Diff([]string{"10m0s 203.0.113.9"}, alerts()); diff != "" {
		t.Errorf("alerts within the first hour (-want +got):\n%s", diff)
	}
	b, err := s.BlockedFor(ctx, mustTarget(t, s, "web-1"), at(21*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	wantCounters := []store.BlockedCounter{{Protocol: "tcp", Port: 22, Packets: 90, Connections: 45}}
	if diff := cmp.Diff(wantCounters, b.Counters); diff != "" {
		t.Errorf("blocked counters (-want +got):\n%s", diff)
	}
	wantSources := []store.BlockedSource{src("203.0.113.9", 51, at(20*time.Minute)), src("203.0.113.10", 2, at(time.Minute))}
	if diff := cmp.Diff(wantSources, b.Sources); diff != "" {
		t.Errorf("blocked sources (-want +got):\n%s", diff)
	}
	// More than an hour after the first alert, the attack goes on: a second.
	report(at(75*time.Minute), 120, src("203.0.113.9", 25, at(75*time.Minute)))
	if diff := cmp.Diff([]string{"10m0s 203.0.113.9", "1h15m0s 203.0.113.9"}, alerts()); diff != "" {
		t.Errorf("alerts after an hour (-want +got):\n%s", diff)
	}
}
