package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestStaleAuthorizationNeverHonored: what authorizes a request (the
// caller's token, its role binding, the target's policy) is taken away
// through another store — on PostgreSQL another replica's, a millisecond
// before — right after the same caller made requests on this server (so that
// anything the hot path keeps, such as the decoded policy and token memos,
// is warm); the very next call is refused. On SQLite the change goes through
// the same store.
func TestStaleAuthorizationNeverHonored(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				// take removes what authorized bob, through other.
				take func(t *testing.T, other *store.Store, tokenID string)
				// status is the refusal's HTTP status.
				status int
			}{
				{"token revoked", func(t *testing.T, other *store.Store, tokenID string) {
					if _, err := other.RevokeToken(context.Background(), store.Actor{Name: "admin"}, tokenID, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, http.StatusUnauthorized},
				{"binding removed", func(t *testing.T, other *store.Store, _ string) {
					if err := other.DeleteBinding(context.Background(), store.Actor{Name: "admin"}, bobBinding, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, http.StatusForbidden},
				{"policy tightened", func(t *testing.T, other *store.Store, _ string) {
					// Port 22 now needs an approval: bob's next request
					// must wait for one, not open.
					pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22},
						Approval: policy.Approval{Mode: policy.Manual, Approvals: 1}}}})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := other.SetPolicy(context.Background(), store.Actor{Name: "admin"}, "web-01", pol, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, 0},
			} {
				t.Run(tc.name, func(t *testing.T) {
					e, other := staleEnv(t, db)
					ctx := context.Background()
					e.addTarget(t, "web-01")
					e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
					if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, bobBinding, time.Now()); err != nil {
						t.Fatal(err)
					}
					secret, info, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, time.Now())
					if err != nil {
						t.Fatal(err)
					}
					bob, err := client.New(e.srv.URL, secret)
					if err != nil {
						t.Fatal(err)
					}
					ask := func(i int) (wire.Request, error) {
						return bob.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(int64(i)),
							Duration: wire.Duration(time.Hour), Reason: "stale"})
					}
					for i := range 5 {
						r, err := ask(i)
						if err != nil {
							t.Fatalf("request %d before the change: %v", i, err)
						}
						if r.State != "pending" {
							t.Fatalf("request %d before the change is %s, want pending (granted, waiting for the agent)", i, r.State)
						}
					}
					tc.take(t, other, info.ID)
					r, err := ask(100)
					if tc.status == 0 {
						if err != nil {
							t.Fatalf("request after the policy change: %v", err)
						}
						if r.State != "pending_approval" {
							t.Fatalf("request after the rule began to need an approval is %s, want pending_approval: the old policy was honored", r.State)
						}
						return
					}
					var ae *client.APIError
					if !errors.As(err, &ae) || ae.Status != tc.status {
						t.Fatalf("request after the change: %v (state %q), want HTTP %d", err, r.State, tc.status)
					}
				})
			}
		})
	}
}

var bobBinding = authz.Binding{Principal: "user:bob", Role: authz.Requester, Scope: "*"}

// staleEnv is an API server on db and the store through which a change
// is made: on PostgreSQL a second store on the same database (another
// replica), on SQLite the server's own.
func staleEnv(t *testing.T, db string) (*env, *store.Store) {
	t.Helper()
	return staleEnvWith(t, db, nil)
}

// staleEnvWith is staleEnv with edit applied to the server's Deps.
func staleEnvWith(t *testing.T, db string, edit func(*api.Deps)) (*env, *store.Store) {
	t.Helper()
	if db == "sqlite" {
		e := newEnvWith(t, edit)
		return e, e.st
	}
	dsn := testenv.Postgres(t)
	st, err := store.OpenPostgres(context.Background(), dsn, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	other, err := store.OpenPostgres(context.Background(), dsn, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	return newEnvOn(t, st, edit), other
}

// TestLongPollRechecksAfterTheWait: a long-poll on another's request is
// authorized when it starts; its answer may come up to a minute later. The
// reader whose binding was removed, or whose token was revoked, meanwhile
// must not be given the request's new state when it changes (approved,
// revoked: its approvers, messages, where to connect). Before, the check
// ran once, before the wait (SQLite and PostgreSQL, the change through
// another replica).
func TestLongPollRechecksAfterTheWait(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				own    bool // bob waits on his own request (no role needed), not ann
				take   func(t *testing.T, other *store.Store, tokenID string)
				status int
			}{
				{"binding removed", false, func(t *testing.T, other *store.Store, _ string) {
					if err := other.DeleteBinding(context.Background(), store.Actor{Name: "admin"}, auditorBinding, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, http.StatusForbidden},
				{"token revoked", false, func(t *testing.T, other *store.Store, tokenID string) {
					if _, err := other.RevokeToken(context.Background(), store.Actor{Name: "admin"}, tokenID, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, http.StatusUnauthorized},
				// One's own request needs no role, but a live token.
				{"own request, token revoked", true, func(t *testing.T, other *store.Store, tokenID string) {
					if _, err := other.RevokeToken(context.Background(), store.Actor{Name: "admin"}, tokenID, time.Now()); err != nil {
						t.Fatal(err)
					}
				}, http.StatusUnauthorized},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var hub *api.Hub
					e, other := staleEnvWith(t, db, func(d *api.Deps) { hub = d.Hub })
					ctx := context.Background()
					e.addTarget(t, "web-01")
					e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
					for _, b := range []authz.Binding{bobBinding, auditorBinding} {
						if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, b, time.Now()); err != nil {
							t.Fatal(err)
						}
					}
					user := func(name string) (*client.Client, string) {
						secret, info, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
						if err != nil {
							t.Fatal(err)
						}
						c, err := client.New(e.srv.URL, secret)
						if err != nil {
							t.Fatal(err)
						}
						return c, info.ID
					}
					bob, bobToken := user("bob")
					ann, annToken := user("ann")
					waiter, waiterToken, revoker := ann, annToken, bob
					if tc.own {
						waiter, waiterToken, revoker = bob, bobToken, e.c
					}
					r, err := bob.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
						Duration: wire.Duration(time.Hour), Reason: "stale"})
					if err != nil {
						t.Fatal(err)
					}
					type answer struct {
						r   wire.Request
						err error
					}
					got := make(chan answer, 1)
					go func() {
						r, err := waiter.WaitRequest(ctx, r.ID, r.State, 30*time.Second)
						got <- answer{r, err}
					}()
					// The long-poll waits (authorized when it began).
					waitFor(t, "the long-poll waiting", func() bool { return hub.RequestWaiters("web-01") > 0 })
					tc.take(t, other, waiterToken)
					if _, err := revoker.Revoke(ctx, r.ID, "done"); err != nil {
						t.Fatal(err)
					}
					a := <-got
					var ae *client.APIError
					if !errors.As(a.err, &ae) || ae.Status != tc.status {
						t.Fatalf("the long-poll after the change: %v (state %q), want HTTP %d: the check before the wait was honored after it", a.err, a.r.State, tc.status)
					}
				})
			}
		})
	}
}

var auditorBinding = authz.Binding{Principal: "user:ann", Role: authz.Auditor, Scope: "*"}
