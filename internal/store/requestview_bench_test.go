package store_test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// BenchmarkReadRequestView compares the long-poll's read after its wait as
// one statement (ReadRequestView) with the three it replaced (GetRequest,
// GetToken, GetTarget), and with the read of a wait whose request was handed
// over (HandedRequestView: its target and the token).
func BenchmarkReadRequestView(b *testing.B) {
	ctx := b.Context()
	s, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "j.db"), store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	actor := store.Actor{Name: "alice"}
	admin, err := s.CreateAdminToken(ctx, actor, "alice", t0)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := s.CreateTarget(ctx, actor, "web-1", map[string]string{"env": "prod"}, t0, time.Hour); err != nil {
		b.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, actor, "web-1", pol, t0); err != nil {
		b.Fatal(err)
	}
	req, err := s.CreateRequest(ctx, actor, "web-1", policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}},
		Source: netip.MustParsePrefix("198.51.100.7/32"), Duration: time.Hour, Reason: "r"}, policy.DefaultLimits(), t0)
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.Authenticate(ctx, admin, t0)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("one statement", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ReadRequestView(ctx, req.ID, p.TokenID, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The read of a wait answered from the row its wake-up handed over:
	// the target and the token (HandedRequestView), not the request.
	b.Run("handed over: target and token", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.HandedRequestView(ctx, req, p.TokenID, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("the request alone", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.GetRequest(ctx, req.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("three statements", func(b *testing.B) {
		for b.Loop() {
			r, err := s.GetRequest(ctx, req.ID)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.GetToken(ctx, p.TokenID, t0); err != nil {
				b.Fatal(err)
			}
			if _, err := s.GetTarget(ctx, r.Target); err != nil {
				b.Fatal(err)
			}
		}
	})
}
