package api_test

import (
	"context"
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

// TestRequestsOfANamesake: a target's name outlives it (as in
// TestSessionsOfANamesake). web-01 is created with env=dev, dan asks for
// access to it (from where, why, which ports), and it is removed (which
// revokes dan's request); web-01 is created again with env=prod and erin
// asks for access there. pat, an approver of env=prod, lists, fetches and
// long-polls erin's request and not dan's, and is refused approving,
// denying and revoking dan's as on any target outside the scope (403, not
// the 409 of a request already ended: he learns nothing of it); ada, an
// approver of the name, sees both and gets the 409; dan still sees his own
// (and not erin's). A selector on today's labels does not pick dan's
// request for ada either: it is judged as if its target had none. Before,
// a request was judged by today's web-01: pat saw dan's, and his
// decisions reached the store (409).
func TestRequestsOfANamesake(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(t *testing.T, c *clock) *env
	}{
		{"sqlite", func(t *testing.T, c *clock) *env { return newEnvWith(t, func(d *api.Deps) { d.Now = c.Now }) }},
		{"postgres", func(t *testing.T, c *clock) *env {
			return newPostgresEnvWith(t, func(d *api.Deps) { d.Now = c.Now })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testRequestsOfANamesake(t, tc.env)
		})
	}
}

func testRequestsOfANamesake(t *testing.T, newEnv func(*testing.T, *clock) *env) {
	clock := newClock(time.Now())
	e := newEnv(t, clock)
	ctx := context.Background()
	ids := map[string]string{}             // request id by env
	clients := map[string]*client.Client{} // the requesters' clients
	for _, x := range []struct{ env, who string }{{"dev", "dan"}, {"prod", "erin"}} {
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": x.env}}); err != nil {
			t.Fatal(err)
		}
		e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
		clock.Advance(time.Minute)
		c := e.userWith(t, x.who, authz.Requester, authz.Scope("label:env="+x.env))
		r, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
			Duration: wire.Duration(time.Hour), Reason: "incident on the " + x.env + " web-01"})
		if err != nil {
			t.Fatalf("%s's request: %v", x.who, err)
		}
		ids[x.env], clients[x.who] = r.ID, c
		clock.Advance(time.Minute)
		if x.env == "dev" {
			if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Minute)
		}
	}
	dev, prod := ids["dev"], ids["prod"]
	for _, tt := range []struct {
		who          string
		c            *client.Client
		listed       []string // GET /requests?target=web-01, newest first
		prodSelected []string // GET /requests?selector=env=prod
		get          int      // GET (and GET ?wait=) of dan's request
		decide       int      // approve, deny, revoke dan's request (0: not tried)
	}{
		{"pat", e.userWith(t, "pat", authz.Approver, "label:env=prod"), []string{prod}, []string{prod}, http.StatusForbidden, http.StatusForbidden},
		{"ada", e.userWith(t, "ada", authz.Approver, "target:web-01"), []string{prod, dev}, []string{prod}, http.StatusOK, http.StatusConflict},
		{"dan", clients["dan"], []string{dev}, nil, http.StatusOK, 0},
	} {
		for _, q := range []struct {
			f    client.RequestFilter
			want []string
		}{
			{client.RequestFilter{Target: "web-01"}, tt.listed},
			{client.RequestFilter{}, tt.listed},
			{client.RequestFilter{Selector: "env=prod"}, tt.prodSelected},
		} {
			rs, err := tt.c.Requests(ctx, q.f)
			if err != nil {
				t.Fatalf("%s: list %+v: %v", tt.who, q.f, err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.ID)
			}
			if !slices.Equal(got, q.want) {
				t.Errorf("%s: list %+v: %v, want %v (dev %s, prod %s)", tt.who, q.f, got, q.want, dev, prod)
			}
		}
		if _, err := tt.c.Request(ctx, dev); status(err) != tt.get {
			t.Errorf("%s: GET the dev web-01's request: %v, want %d", tt.who, err, tt.get)
		}
		// A state it is not in: answered at once once authorized.
		if _, err := tt.c.WaitRequest(ctx, dev, "pending", time.Second); status(err) != tt.get {
			t.Errorf("%s: GET ?wait= the dev web-01's request: %v, want %d", tt.who, err, tt.get)
		}
		if tt.decide == 0 {
			continue
		}
		for what, do := range map[string]func() error{
			"approve": func() error { _, err := tt.c.Approve(ctx, dev, "ok", 0); return err },
			"deny":    func() error { _, err := tt.c.Deny(ctx, dev, "no", 0); return err },
			"revoke":  func() error { _, err := tt.c.Revoke(ctx, dev, "done"); return err },
		} {
			if err := do(); status(err) != tt.decide {
				t.Errorf("%s: %s the dev web-01's request: %v, want %d", tt.who, what, err, tt.decide)
			}
		}
	}
}

// status is the HTTP status of a client call's error (200 for none).
func status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return client.StatusOf(err)
}

// TestKillANamesakesSession: killing a session is judged as listing it is
// (TestSessionsOfANamesake): by its target as it was when it started. pat,
// an approver of env=prod, is refused (403) killing the session dan had on
// the dev web-01 removed since, as on any target outside his scope; ada, an
// approver of the name, is told it has ended (409). Before, pat was judged
// by today's prod web-01 and told it had ended.
func TestKillANamesakesSession(t *testing.T) {
	clock := newClock(time.Now())
	e := newEnvWith(t, func(d *api.Deps) { d.Now = clock.Now })
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": "dev"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	now := clock.Now()
	if err := e.st.StartSession(ctx, session.Session{ID: "s-dev", Target: "web-01", Principal: "dan", Protocol: "tcp", Port: 22,
		ClientAddr: "198.51.100.7", StartedAt: now, Deadline: now.Add(time.Hour), State: session.Live}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EndSession(ctx, "s-dev", session.Closed, "", "", 0, 0, now.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		who   string
		scope authz.Scope
		want  int
	}{
		{"pat", "label:env=prod", http.StatusForbidden},
		{"ada", "target:web-01", http.StatusConflict},
	} {
		c := e.userWith(t, tt.who, authz.Approver, tt.scope)
		if _, err := c.KillSession(ctx, "s-dev", "done"); status(err) != tt.want {
			t.Errorf("%s (%s): kill the dev web-01's session: %v, want %d", tt.who, tt.scope, err, tt.want)
		}
	}
}
