package store_test

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestReadRequestView checks the long-poll's one read (api.getRequest): the
// request as GetRequest returns it, its target's name, labels and addresses
// as GetTarget does, and the
// token's liveness as GetToken judges it (unknown, revoked and expired are
// not live); a request whose target is gone comes alone, one whose target
// has a namesake since comes with it and its creation time (which tells
// it apart), and a missing one is ErrNotFound.
func TestReadRequestView(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *store.Store
	}{
		{"sqlite", func(t *testing.T) *store.Store {
			return openSQLite(t, filepath.Join(t.TempDir(), "j.db"))
		}},
		{"postgres", func(t *testing.T) *store.Store { return openPostgres(t, testenv.Postgres(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			ctx := t.Context()
			admin, _, req := seed(t, s)
			p, err := s.Authenticate(ctx, admin, t0)
			if err != nil {
				t.Fatal(err)
			}
			want, err := s.GetRequest(ctx, req.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantT, err := s.GetTarget(ctx, "web-1")
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, tokenID string, at time.Time, live, withTarget bool) {
				t.Helper()
				v, err := s.ReadRequestView(ctx, req.ID, tokenID, at)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if v.Request.ID != want.ID || v.Request.Version != want.Version || v.Request.State != want.State ||
					v.Request.Source != want.Source || len(v.Request.Ports) != len(want.Ports) {
					t.Errorf("%s: request %+v, want %+v", what, v.Request, want)
				}
				if v.TokenLive != live {
					t.Errorf("%s: token live %v, want %v", what, v.TokenLive, live)
				}
				switch {
				case !withTarget && v.Target != nil:
					t.Errorf("%s: target %+v, want none", what, v.Target)
				case withTarget && (v.Target == nil || v.Target.Name != wantT.Name || v.Target.Gateway != wantT.Gateway ||
					v.Target.Address != wantT.Address || !v.Target.CreatedAt.Equal(wantT.CreatedAt) || !slices.Equal(v.Target.Addresses, wantT.Addresses) ||
					!maps.Equal(v.Target.Labels, wantT.Labels) || len(wantT.Labels) == 0 || len(wantT.Addresses) == 0):
					t.Errorf("%s: target %+v, want %+v", what, v.Target, wantT)
				}
			}
			check("live token", p.TokenID, t0, true, true)
			check("no token asked", "", t0, false, true)
			check("unknown token", "t-nosuch", t0, false, true)
			// A personal token that expires.
			_, info, err := s.CreateToken(ctx, store.Actor{Name: "alice"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Minute}, t0)
			if err != nil {
				t.Fatal(err)
			}
			check("personal token", info.ID, t0, true, true)
			check("expired token", info.ID, t0.Add(time.Minute), false, true)
			if _, err := s.RevokeToken(ctx, store.Actor{Name: "alice"}, info.ID, t0); err != nil {
				t.Fatal(err)
			}
			check("revoked token", info.ID, t0, false, true)
			if _, err := s.ReadRequestView(ctx, "r-nosuch", p.TokenID, t0); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a missing request: %v, want ErrNotFound", err)
			}
			if err := s.RemoveTarget(ctx, store.Actor{Name: "alice"}, "web-1", t0); err != nil {
				t.Fatal(err)
			}
			if want, err = s.GetRequest(ctx, req.ID); err != nil {
				t.Fatal(err)
			}
			check("target gone", p.TokenID, t0, true, false)
			// A namesake created since comes with its creation time,
			// after the request's: the api judges the request by the
			// name alone (targetThen), not by the namesake's labels.
			if _, _, err := s.CreateTarget(ctx, store.Actor{Name: "alice"}, "web-1", map[string]string{"env": "dev"}, t0.Add(time.Minute), time.Hour); err != nil {
				t.Fatal(err)
			}
			if v, err := s.ReadRequestView(ctx, req.ID, "", t0); err != nil || v.Target == nil || v.Target.Labels["env"] != "dev" ||
				!v.Request.CreatedAt.Before(v.Target.CreatedAt) || !v.Target.CreatedAt.Equal(t0.Add(time.Minute)) {
				t.Errorf("a namesake: request made %v, target created %+v (%v); want the target created at %v, after the request",
					v.Request.CreatedAt, v.Target, err, t0.Add(time.Minute))
			}
		})
	}
}
