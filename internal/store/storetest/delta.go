package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/store"
)

// testDesiredChanges checks the change log behind incremental desired state:
// each revision names the grants it added, extended or removed, and anything
// else (a rule change, a gap in the log, revisions lifted by the restore
// guard, a revision the database does not know) asks for a snapshot.
func testDesiredChanges(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	src := "198.51.100.7/32"
	revs := map[string]int64{"start": mustTarget(t, s, "web-1").Revision}

	r1 := mustRequest(t, s, alice, "web-1", ask(src, time.Hour, tcp(22)), at(time.Second))
	revs["added"] = r1.Revision
	r2 := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(2*time.Second))
	revs["bob"] = r2.Revision
	r3 := mustRequest(t, s, alice, "web-1", ask(src, 2*time.Hour, tcp(22)), at(3*time.Second))
	revs["extended"] = r3.Revision
	if _, err := s.RevokeRequest(ctx, bob, r2.ID, "done", at(4*time.Second)); err != nil {
		t.Fatalf("RevokeRequest: %v", err)
	}
	revs["revoked"] = mustTarget(t, s, "web-1").Revision

	now := at(5 * time.Second)
	live := grants(t, s, "web-1", now)
	if len(live) != 1 {
		t.Fatalf("live grants: %+v, want alice's only", live)
	}
	alices := live[0]
	if alices.ID == 0 || alices.Target != "web-1" {
		t.Fatalf("DesiredState's grant row lacks its id or target: %+v", alices)
	}
	bobs := int64(0)
	if d := mustChanges(t, s, "web-1", revs["added"], now); len(d.Changed) == 2 {
		bobs = d.Changed[1]
		if bobs == alices.ID {
			bobs = d.Changed[0]
		}
	}

	cases := []struct {
		name     string
		after    int64
		snapshot bool
		changed  []int64
		grants   []store.GrantRow
	}{
		{"added", revs["start"], false, []int64{alices.ID, bobs}, []store.GrantRow{alices}},
		{"extended", revs["bob"], false, []int64{alices.ID, bobs}, []store.GrantRow{alices}},
		{"removed", revs["extended"], false, []int64{bobs}, nil},
		{"nothing changed", revs["revoked"], false, nil, nil},
		{"agent holds nothing", 0, true, nil, nil},
		{"revision this database does not know", revs["revoked"] + 5, true, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := mustChanges(t, s, "web-1", tc.after, now)
			if d.Revision != revs["revoked"] || d.Snapshot != tc.snapshot {
				t.Fatalf("DesiredChanges(after %d) = revision %d snapshot %v, want %d %v", tc.after, d.Revision, d.Snapshot, revs["revoked"], tc.snapshot)
			}
			if diff := cmp.Diff(tc.changed, d.Changed, cmpOpts); diff != "" {
				t.Errorf("changed ids (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.grants, d.Grants, cmpOpts); diff != "" {
				t.Errorf("changed grants (-want +got):\n%s", diff)
			}
			for _, g := range d.Grants {
				if g.ID != alices.ID || !g.ExpiresAt.Equal(alices.ExpiresAt) {
					t.Errorf("changed grant %+v, want alice's extended grant %+v", g, alices)
				}
			}
		})
	}

	// Expiry needs no revision: a grant past its deadline is not sent as
	// live, only as changed.
	if d := mustChanges(t, s, "web-1", revs["start"], at(3*time.Hour)); d.Snapshot || len(d.Grants) != 0 || len(d.Changed) != 2 {
		t.Errorf("after every deadline: %+v, want both ids changed and no live grant", d)
	}

	// A rule change of a host target is told as one (Rules), from before
	// it and from across it, with the live grants on the ports whose rule
	// went (none here: the dropped rule's port has no live grant).
	pol := testPolicy(t)
	pol.Rules = pol.Rules[:2]
	if _, err := s.SetPolicy(ctx, alice, "web-1", pol, at(6*time.Second)); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	for _, after := range []int64{revs["revoked"], revs["start"]} {
		if d := mustChanges(t, s, "web-1", after, at(7*time.Second)); d.Snapshot || !d.Rules {
			t.Errorf("after a rule change, from %d: %+v, want a rule change", after, d)
		}
	}
	if d := mustChanges(t, s, "web-1", revs["revoked"], at(7*time.Second)); len(d.Changed) != 0 {
		t.Errorf("after a rule change that dropped a port without grants: %+v, want no grant changed", d)
	}
	ruled := mustTarget(t, s, "web-1").Revision
	r4 := mustRequest(t, s, alice, "web-1", ask("198.51.100.9/32", time.Hour, tcp(443)), at(8*time.Second))
	if d := mustChanges(t, s, "web-1", ruled, at(9*time.Second)); d.Snapshot || len(d.Changed) != 1 || len(d.Grants) != 1 || d.Revision != r4.Revision {
		t.Errorf("a grant after the rule change: %+v, want one grant at revision %d", d, r4.Revision)
	}

	// The restore guard lifts revisions: the lifted range has no log, so an
	// agent that held a revision of the old numbering gets a snapshot.
	if _, _, err := s.AgentAhead(ctx, "web-1", r4.Revision+3, r4.Revision, at(10*time.Second)); err != nil {
		t.Fatalf("AgentAhead: %v", err)
	}
	if d := mustChanges(t, s, "web-1", r4.Revision, at(11*time.Second)); !d.Snapshot {
		t.Errorf("across lifted revisions: %+v, want a snapshot", d)
	}

	// Beyond the window of kept revisions: a snapshot.
	if d := mustChanges(t, s, "web-1", mustTarget(t, s, "web-1").Revision-store.ChangeWindow-1, at(11*time.Second)); !d.Snapshot {
		t.Errorf("beyond the log's window: %+v, want a snapshot", d)
	}
}

func mustChanges(t *testing.T, s *store.Store, enforcer string, after int64, now time.Time) store.DesiredDelta {
	t.Helper()
	d, err := s.DesiredChanges(t.Context(), enforcer, after, now)
	if err != nil {
		t.Fatalf("DesiredChanges(%s, %d): %v", enforcer, after, err)
	}
	return d
}
