package store

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
)

// TestNoStateLiterals fails when the store's code writes a request state as
// a SQL literal: states come from access (access.Start, access.Next through
// transition, and the lists in transition.go), so that the state machine
// lives in one place. Migrations are history and are not checked.
func TestNoStateLiterals(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(body), "\n") {
			for _, s := range access.States {
				if strings.Contains(line, "'"+string(s)+"'") {
					t.Errorf("%s:%d: request state %q written as a SQL literal; build it from access (transition.go)", f, i+1, s)
				}
			}
		}
	}
}

// TestTransitionCompareAndSet checks the guard every state change goes
// through: an update from a state or version that is no longer the row's
// changes nothing (ErrStale), so a transition computed on an old read can
// never overwrite a deny or a revocation committed meanwhile; a transition
// the table forbids is refused before anything is written.
func TestTransitionCompareAndSet(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	if _, _, err := s.CreateTarget(ctx, Actor{Name: "admin"}, "web", nil, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, Actor{Name: "admin"}, "web", pol, now); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRequest(ctx, Actor{Name: "alice"}, "web", policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix("198.51.100.7/32"),
		Duration: time.Minute}, policy.DefaultLimits(), now)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != access.Pending {
		t.Fatalf("new request is %s, want %s", r.State, access.Pending)
	}
	// A revocation commits after an activation was computed on the
	// pending request: the activation must not overwrite it.
	if _, err := s.RevokeRequest(ctx, Actor{Name: "admin"}, r.ID, "", now); err != nil {
		t.Fatal(err)
	}
	inTx := func(f func(tx *sql.Tx) error) error { return s.tx(ctx, f) }
	err = inTx(func(tx *sql.Tx) error {
		_, err := transition(ctx, tx, r.ID, r.State, r.Version, access.Activate, set{"activated_at", ms(now)})
		return err
	})
	if !errors.Is(err, ErrStale) {
		t.Errorf("activation on a stale read of a revoked request: error = %v, want ErrStale", err)
	}
	got, err := s.GetRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != access.Revoked || got.ActivatedAt != nil {
		t.Errorf("after the stale activation the request is %s (activated %v), want revoked and never activated", got.State, got.ActivatedAt)
	}
	// The current read, but an event the table refuses from a terminal
	// state.
	err = inTx(func(tx *sql.Tx) error {
		_, err := transition(ctx, tx, r.ID, got.State, got.Version, access.Activate)
		return err
	})
	if !errors.Is(err, ErrConflict) || !errors.Is(err, access.ErrTransition) {
		t.Errorf("activating a revoked request: error = %v, want ErrConflict and access.ErrTransition", err)
	}
	if again, _ := s.GetRequest(ctx, r.ID); again.Version != got.Version || again.State != access.Revoked {
		t.Errorf("a refused transition changed the request: %s v%d, want revoked v%d", again.State, again.Version, got.Version)
	}
}
