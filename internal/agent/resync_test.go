package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestResyncSkippedOnlyWhileTableIntact: against real nftables, the
// periodic resync does no full apply (the delta Index is not rebuilt) while
// the ruleset generation says nobody touched the kernel since the agent's
// own batch; any commit by someone else (another table created, our set
// flushed) makes it apply in full, which repairs the set.
func TestResyncSkippedOnlyWhileTableIntact(t *testing.T) {
	testenv.RequireKernel(t)
	ns := testenv.NewNetns(t)
	be, err := nft.New(nft.WithNetNSFd(ns.FD()), nft.WithStateFile(filepath.Join(t.TempDir(), "nft-state")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	a, err := New(Config{StateDir: filepath.Join(t.TempDir(), "state"), Logger: benchLogger()}, be)
	if err != nil {
		t.Fatal(err)
	}
	a.srv, a.hwLoaded = nullServer{}, true
	a.setTarget("web-01")
	now := time.Now()
	ds := wire.DesiredState{Target: "web-01", Revision: 1, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	for i, src := range []string{"192.0.2.1/32", "192.0.2.2/32", "198.51.100.0/24"} {
		ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: src, Protocol: "tcp", Port: 22, ExpiresAt: now.Add(time.Hour).UTC()})
	}
	ctx := context.Background()
	if !a.receive(ctx, ds, time.Now()) || a.failed {
		t.Fatalf("snapshot not applied: %v", a.Status().LastError)
	}
	intact := func(want bool, why string) {
		t.Helper()
		idx := a.index
		if got := a.skipResync(ctx); got != want {
			t.Fatalf("%s: resync skipped = %v, want %v", why, got, want)
		}
		if want && a.index != idx {
			t.Fatalf("%s: the skipped resync rebuilt the index", why)
		}
	}
	intact(true, "after the agent's own apply")
	intact(true, "again")
	// A long-poll answered with the same revision (a server without deltas
	// does so every wait) keeps the Index, and so the skipped resync.
	if a.receive(ctx, ds, time.Now()) || a.failed {
		t.Fatalf("the same revision again was applied again: %v", a.Status().LastError)
	}
	intact(true, "after the same revision again")

	ns.Run(t, "nft", "add", "table", "inet", "other")
	intact(false, "after a commit to another table")
	a.apply(ctx, "resync")
	intact(true, "after the full resync")

	ns.Run(t, "nft", "flush", "set", "inet", "jitgate", "hosts4")
	intact(false, "after our set was flushed")
	a.apply(ctx, "resync")
	if out := ns.Run(t, "nft", "list", "set", "inet", "jitgate", "hosts4"); !strings.Contains(out, "192.0.2.2") {
		t.Fatalf("the full resync did not restore the flushed set:\n%s", out)
	}
	intact(true, "after the repair")

	a.failed = true
	intact(false, "after a failed apply")
}
