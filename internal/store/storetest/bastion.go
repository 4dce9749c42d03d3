package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
)

// testBastion covers the bastion's part of the store: a request without a
// source stores none and its grant carries its request and requester; the
// grant a tunnel may use is that of an active request of the same
// requester; sessions start live, end once (a second end is a conflict),
// and a start marks the ones left live ended.
func testBastion(t *testing.T, s *store.Store) {
	ctx := t.Context()
	_, _, err := s.CreateTarget(ctx, alice, "web-1", nil, t0, enrollTTL)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: tcp(22), Access: policy.AccessBastion, MaxDuration: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, alice, "web-1", pol, t0); err != nil {
		t.Fatal(err)
	}
	req := mustRequest(t, s, alice, "web-1", policy.Request{Ports: []policy.Port{tcp(22)}, Duration: 30 * time.Minute, Reason: "x"}, t0)
	if req.Source.IsValid() || mustGet(t, s, req.ID).Source.IsValid() {
		t.Fatalf("a bastion-only request stored a source: %v", req.Source)
	}
	gs := grants(t, s, "web-1", t0)
	if len(gs) != 1 || gs[0].Source.IsValid() || gs[0].RequestID != req.ID || gs[0].Requester != "alice" {
		t.Fatalf("grants = %+v, want alice's grant of %s without a source", gs, req.ID)
	}
	// Pending: the agent may not hold it yet, so no tunnel.
	if _, err := s.BastionGrant(ctx, "web-1", "alice", tcp(22), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BastionGrant of a pending request: %v, want not found", err)
	}
	mustReport(t, s, "web-1", mustTarget(t, s, "web-1").Revision, t0)
	g, err := s.BastionGrant(ctx, "web-1", "alice", tcp(22), at(time.Minute))
	if err != nil || g.RequestID != req.ID || !g.ExpiresAt.Equal(at(30*time.Minute)) {
		t.Fatalf("BastionGrant = %+v, %v", g, err)
	}
	for _, who := range []string{"bob"} {
		if _, err := s.BastionGrant(ctx, "web-1", who, tcp(22), at(time.Minute)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("BastionGrant of %s (holds none): %v", who, err)
		}
	}
	if _, err := s.BastionGrant(ctx, "web-1", "alice", tcp(22), at(30*time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BastionGrant at the deadline: %v, want not found", err)
	}

	x := session.Session{ID: store.NewSessionID(), Target: "web-1", Principal: "alice", RequestID: req.ID, Protocol: "tcp", Port: 22,
		StartedAt: at(time.Minute), Deadline: g.ExpiresAt, State: session.Live}
	y := x
	y.ID = store.NewSessionID()
	for _, v := range []session.Session{x, y} {
		if err := s.StartSession(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	ended, err := s.EndSession(ctx, x.ID, session.Killed, "carol", "why", 10, 20, at(2*time.Minute))
	if err != nil || ended.State != session.Ended || ended.Reason != session.Killed || ended.EndedBy != "carol" || ended.BytesOut != 20 {
		t.Fatalf("EndSession = %+v, %v", ended, err)
	}
	if _, err := s.EndSession(ctx, x.ID, session.Closed, "", "", 0, 0, at(3*time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ending an ended session: %v, want a conflict", err)
	}
	live, err := s.ListSessions(ctx, store.SessionFilter{Live: true})
	if err != nil || len(live) != 1 || live[0].ID != y.ID {
		t.Fatalf("live sessions = %+v, %v; want only %s", live, err, y.ID)
	}
	if n, err := s.EndLiveSessions(ctx, session.ServerLost, at(4*time.Minute)); err != nil || n != 1 {
		t.Fatalf("EndLiveSessions = %d, %v; want 1", n, err)
	}
	if got, _ := s.GetSession(ctx, y.ID); got.State != session.Ended || got.Reason != session.ServerLost {
		t.Errorf("session left live = %+v, want ended server_lost", got)
	}
	if got, _ := s.GetSession(ctx, x.ID); got.Reason != session.Killed {
		t.Errorf("EndLiveSessions touched an ended session: %+v", got)
	}
	var actions []string
	for _, e := range trail(t, s, store.AuditFilter{Target: "web-1"}) {
		if a := strings.Fields(e)[0]; strings.HasPrefix(a, "session.") {
			actions = append(actions, a)
		}
	}
	want := []string{"session.started", "session.started", "session.killed", "session.ended"}
	if !slices.Equal(actions, want) {
		t.Errorf("session audit = %q, want %q", actions, want)
	}
}

// testSessionPaging pages through sessions newest first with the filters
// (live, target, principal) applied by the store: every page follows the
// last one's key without a gap or a repeat, sessions started in the same
// millisecond included, and a filtered listing (by id too) holds exactly
// the sessions that match.
func testSessionPaging(t *testing.T, s *store.Store) {
	ctx := t.Context()
	var all []session.Session
	for i := range 12 {
		x := session.Session{ID: store.NewSessionID(), Target: []string{"web-1", "db-1", "web-1"}[i%3],
			Principal: []string{"user:alice", "user:bob"}[i%2], RequestID: "r-1", Protocol: "tcp", Port: 22,
			// Pairs start in the same millisecond: the id orders them.
			StartedAt: at(time.Duration(i/2) * time.Minute), Deadline: at(time.Hour), State: session.Live}
		if err := s.StartSession(ctx, x); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			if _, err := s.EndSession(ctx, x.ID, session.Closed, "", "", 0, 0, at(30*time.Minute)); err != nil {
				t.Fatal(err)
			}
			x.State = session.Ended
		}
		all = append(all, x)
	}
	slices.SortFunc(all, func(a, b session.Session) int {
		if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, f := range []store.SessionFilter{
		{},
		{Live: true},
		{Target: "web-1"},
		{Principal: "user:bob"},
		{Live: true, Target: "db-1", Principal: "user:bob"},
		{Target: "nowhere"},
		{ID: all[3].ID},
		{ID: all[3].ID, Live: !(all[3].State == session.Live)},
	} {
		var want []string
		for _, x := range all {
			if (f.ID == "" || x.ID == f.ID) && (!f.Live || x.State == session.Live) && (f.Target == "" || x.Target == f.Target) && (f.Principal == "" || x.Principal == f.Principal) {
				want = append(want, x.ID)
			}
		}
		for _, limit := range []int{1, 2, 5, 100} {
			var got []string
			f := f
			f.Limit = limit
			for pages := 0; ; pages++ {
				if pages > len(all) {
					t.Fatalf("%+v: the pages never end", f)
				}
				page, err := s.ListSessions(ctx, f)
				if err != nil {
					t.Fatalf("ListSessions(%+v): %v", f, err)
				}
				if len(page) > limit {
					t.Fatalf("ListSessions(%+v): %d sessions, more than the limit", f, len(page))
				}
				for _, x := range page {
					got = append(got, x.ID)
				}
				if len(page) < limit {
					break
				}
				k := store.SessionKeyOf(page[len(page)-1])
				f.After = &k
			}
			if !slices.Equal(got, want) {
				t.Errorf("filter %+v, pages of %d:\n got %v\nwant %v", f, limit, got, want)
			}
		}
	}
}
