package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// TestRequestTargetAsGetTarget: the create's narrower read of its target
// (RequestTarget, 7 columns) gives what the create's handler uses of it
// (the authorization's name and labels, the policy, the addresses, the
// connection hints' gateway, address and creation time) as GetTarget does,
// for a target with its own agent and for one behind a gateway; a missing
// target is ErrNotFound as with GetTarget.
func TestRequestTargetAsGetTarget(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	admin := Actor{Name: "admin"}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "db-1"} {
		if _, _, err := s.CreateTarget(ctx, admin, name, map[string]string{"env": "prod"}, now, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetPolicy(ctx, admin, "web-1", pol, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE targets SET addresses = '["192.0.2.5","2001:db8::5"]', inventory = '{}' WHERE name = 'web-1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE targets SET gateway = 'web-1', address = '10.0.0.5' WHERE name = 'db-1'`); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "db-1"} {
		full, err := s.GetTarget(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.RequestTarget(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		want := Target{Name: full.Name, Labels: full.Labels, Addresses: full.Addresses, Policy: full.Policy,
			Gateway: full.Gateway, Address: full.Address, CreatedAt: full.CreatedAt}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("RequestTarget(%s) = %+v\nwant GetTarget's %+v", name, got, want)
		}
	}
	if _, err := s.RequestTarget(ctx, "gone-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RequestTarget of a missing target: %v, want ErrNotFound", err)
	}
}

// TestRequestTargetCurrentLabels: the labels a create is authorized by
// (RequestTarget, through the decoding memo keyed by the target's name) are
// the target's current ones: a caller changing its copy changes no other
// read, and a target removed and created again under the same name with
// other labels is read with the new labels, never the memo's old ones.
// (An attack on f6a3b6b's memoized read; it held on main: the memo
// compares the exact column text and clones what it hands out.)
func TestRequestTargetCurrentLabels(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	admin := Actor{Name: "admin"}
	if _, _, err := s.CreateTarget(ctx, admin, "web-1", map[string]string{"env": "dev"}, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	first, err := s.RequestTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	first.Labels["env"] = "prod"
	if again, err := s.RequestTarget(ctx, "web-1"); err != nil || again.Labels["env"] != "dev" {
		t.Fatalf("RequestTarget after a caller changed its copy: %v, %v; want env=dev", again.Labels, err)
	}
	if err := s.RemoveTarget(ctx, admin, "web-1", now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateTarget(ctx, admin, "web-1", map[string]string{"env": "prod"}, now.Add(time.Second), time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := s.RequestTarget(ctx, "web-1")
	if err != nil || got.Labels["env"] != "prod" {
		t.Fatalf("RequestTarget of the re-created target: %v, %v; want env=prod", got.Labels, err)
	}
}
