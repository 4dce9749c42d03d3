package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSessionListPages: GET /api/v1/sessions filters by state, target and
// principal and answers a page at a time (?limit=, ?cursor= from the
// Link rel="next" header), newest first, without a gap or a repeat; the
// client follows the pages. 1,500 sessions are more than a page of the
// largest size (1,000), which the list used to cut silently. A requester
// who reads no one else's sessions pages through their own alone, even
// when others' fill the table.
func TestSessionListPages(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	want := map[string][]string{} // filter name -> ids, newest first
	// Newest first: i = 0 is the newest. Pairs share a millisecond.
	var all []session.Session
	for i := range 1500 {
		x := session.Session{ID: fmt.Sprintf("s-page%05d", i), Target: []string{"web-01", "db-01", "web-01"}[i%3],
			Principal: []string{"alice", "bob", "carol"}[i%3/2+i%2], RequestID: f.granted, Protocol: "tcp", Port: 22,
			StartedAt: base.Add(-time.Duration(i/2) * time.Millisecond), Deadline: time.Now().Add(time.Hour), State: session.Live}
		if err := f.st.StartSession(ctx, x); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if _, err := f.st.EndSession(ctx, x.ID, session.Closed, "", "", 0, 0, time.Now()); err != nil {
				t.Fatal(err)
			}
			x.State = session.Ended
		}
		all = append(all, x)
	}
	// The fixture's own session of alice is newer than all of these.
	for _, x := range all {
		want["all"] = append(want["all"], x.ID)
		if x.State == session.Live {
			want["active"] = append(want["active"], x.ID)
		}
		if x.Target == "db-01" {
			want["db-01"] = append(want["db-01"], x.ID)
		}
		if x.Principal == "carol" {
			want["carol"] = append(want["carol"], x.ID)
		}
		if x.Principal == "bob" && x.Target == "web-01" && x.State == session.Live {
			want["bob live web-01"] = append(want["bob live web-01"], x.ID)
		}
	}
	want["all"] = append([]string{f.session}, want["all"]...)
	want["active"] = append([]string{f.session}, want["active"]...)
	queries := map[string]client.SessionQuery{
		"all":             {},
		"active":          {Active: true},
		"db-01":           {Target: "db-01"},
		"carol":           {Principal: "carol"},
		"bob live web-01": {Principal: "bob", Target: "web-01", Active: true},
	}
	for name, q := range queries {
		for _, limit := range []int{0, 7, 1000} {
			q := q
			q.Limit = limit
			got, err := f.c.ListSessions(ctx, q)
			if err != nil {
				t.Fatalf("%s, limit %d: %v", name, limit, err)
			}
			ids := make([]string, len(got))
			for i, s := range got {
				ids[i] = s.ID
			}
			if !slices.Equal(ids, want[name]) {
				t.Errorf("%s, pages of %d: %d sessions, want %d (first %v)", name, limit, len(ids), len(want[name]), ids[:min(3, len(ids))])
			}
		}
	}
	page, next, err := f.c.SessionsPage(ctx, client.SessionQuery{Limit: 10}, "")
	if err != nil || len(page) != 10 || next == "" {
		t.Fatalf("first page of 10: %d sessions, next %q, %v", len(page), next, err)
	}

	// carol reads no one else's requests: her own sessions, every page.
	carol := f.user(t, "carol", authz.Requester, authz.Everywhere)
	got, err := f.c.WithToken(carol).ListSessions(ctx, client.SessionQuery{Limit: 50})
	if err != nil || len(got) != len(want["carol"]) {
		t.Fatalf("carol's own sessions: %d, %v; want %d", len(got), err, len(want["carol"]))
	}
	if got, err := f.c.WithToken(carol).ListSessions(ctx, client.SessionQuery{Principal: "bob"}); err != nil || len(got) != 0 {
		t.Errorf("carol asking for bob's sessions: %d, %v; want none", len(got), err)
	}

	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "target=..%2Fx", "active=yes"} {
		if got := f.do(t, f.admin, "GET", "/api/v1/sessions?"+bad, ""); got != http.StatusUnprocessableEntity {
			t.Errorf("GET /api/v1/sessions?%s: %d, want 422", bad, got)
		}
	}
	// A cursor the server did not give out is a bad request (cursor_test.go).
	for _, bad := range []string{"cursor=%21%21", "cursor=bm9kb3Q"} {
		if got := f.do(t, f.admin, "GET", "/api/v1/sessions?"+bad, ""); got != http.StatusBadRequest {
			t.Errorf("GET /api/v1/sessions?%s: %d, want 400", bad, got)
		}
	}
}

// TestSessionsOfANamesake: a target's name outlives it (as in
// TestAuditByTargetKeepsToRecordedLabels). web-01 is created with env=dev,
// dan opens a session on it, and it is removed; web-01 is created again
// with env=prod and erin opens a session there. pat, an auditor of
// env=prod, sees erin's session, not dan's on the dev web-01 (who, from
// where, how long), in the list, and is refused dan's recording as for
// any target outside the scope; ada, an auditor of the name, sees both.
// Before, a session was judged by today's web-01: pat saw dan's.
func TestSessionsOfANamesake(t *testing.T) {
	clock := newClock(time.Now())
	e := newEnvWith(t, func(d *api.Deps) { d.Now = clock.Now })
	ctx := context.Background()
	for _, x := range []struct{ env, id, who string }{{"dev", "s-dev", "dan"}, {"prod", "s-prod", "erin"}} {
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": x.env}}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		now := clock.Now()
		if err := e.st.StartSession(ctx, session.Session{ID: x.id, Target: "web-01", Principal: x.who, Protocol: "tcp", Port: 22,
			ClientAddr: "198.51.100.7", StartedAt: now, Deadline: now.Add(time.Hour), State: session.Live}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.EndSession(ctx, x.id, session.Closed, "", "", 0, 0, now.Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if x.env == "dev" {
			if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Minute)
		}
	}
	for _, tt := range []struct {
		who       string
		scope     authz.Scope
		want      []string
		recording int // GET s-dev's recording: 404 (none was made) once past the check
	}{
		{"pat", "label:env=prod", []string{"s-prod"}, http.StatusForbidden},
		{"ada", "target:web-01", []string{"s-prod", "s-dev"}, http.StatusNotFound},
	} {
		c := e.userWith(t, tt.who, authz.Auditor, tt.scope)
		got, err := c.ListSessions(ctx, client.SessionQuery{Target: "web-01"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range got {
			ids = append(ids, x.ID)
		}
		if !slices.Equal(ids, tt.want) {
			t.Errorf("%s (%s): sessions %v, want %v", tt.who, tt.scope, ids, tt.want)
		}
		if _, err := c.Recording(ctx, "s-dev", io.Discard); client.StatusOf(err) != tt.recording {
			t.Errorf("%s (%s): the dev web-01's session's recording: %v, want %d", tt.who, tt.scope, err, tt.recording)
		}
	}
}
