package agent

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestDeadlinesOutOfRangeFailClosed: deadlines a server should never send,
// in a snapshot and in a delta, real nftables. One before 1678 (or year 1)
// is long past and must open nothing; one past 2262 (a "never" of
// 9999-12-31) opens, until 2116 at most. The agent holds deadlines as Unix
// nanoseconds, which time.Time.UnixNano wraps outside 1678–2262: a grant
// that ended in 1600 was held as ending in 2184 and opened until 2116, and
// one of 9999 as ending in 1816 and opened nothing. Now they saturate.
func TestDeadlinesOutOfRangeFailClosed(t *testing.T) {
	testenv.RequireKernel(t)
	ctx := context.Background()
	ns := testenv.NewNetns(t)
	be, err := nft.New(nft.WithNetNSFd(ns.FD()))
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
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	now := time.Now()
	cases := []struct {
		src  string
		exp  time.Time
		open bool
	}{
		{"192.0.2.1", at("1600-01-01T00:00:00Z"), false},
		{"192.0.2.2", at("0001-01-01T00:00:01Z"), false},
		{"192.0.2.3", at("1900-01-01T00:00:00Z"), false},
		{"192.0.2.4", at("9999-12-31T00:00:00Z"), true},
		{"192.0.2.5", at("2300-01-01T00:00:00Z"), true},
		{"192.0.2.6", now.Add(time.Hour).UTC(), true},
	}
	ds := wire.DesiredState{Target: "web-01", Revision: 1, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	for i, c := range cases {
		ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: c.src, Protocol: "tcp", Port: 22, ExpiresAt: c.exp})
	}
	// check says whether each case's grant is open as it should be, from
	// the source of the case the delta gave it (third octet 3), or closed
	// when revoked.
	check := func(step string, third byte, revoked bool) {
		t.Helper()
		st, err := be.State(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			b := netip.MustParseAddr(c.src).As4()
			b[2] = third
			src := netip.AddrFrom4(b)
			if got := st.Allows(src, firewall.TCP, 22, time.Now()); got != (c.open && !revoked) {
				t.Errorf("%s: a grant to %s ending %s: open %v, want %v (kernel: %v)", step, src, c.exp, got, c.open && !revoked, st.Elements)
			}
		}
	}
	if a.receive(ctx, ds, time.Now()); a.failed || a.index == nil {
		t.Fatalf("snapshot not applied: %v", a.Status().LastError)
	}
	check("snapshot", 2, false)

	// The same grants again through a delta (other sources), the first
	// ones revoked.
	delta := wire.DesiredState{Target: "web-01", Revision: 2, Since: 1, ServerTime: time.Now().UTC()}
	for i, c := range cases {
		src := netip.MustParseAddr(c.src).As4()
		src[2] = 3
		delta.Changed = append(delta.Changed, int64(i+1), int64(i+101))
		delta.Grants = append(delta.Grants, wire.GrantEntry{ID: int64(i + 101), Source: netip.AddrFrom4(src).String(), Protocol: "tcp", Port: 22, ExpiresAt: c.exp})
	}
	if a.receive(ctx, delta, time.Now()); a.failed || a.applied != 2 {
		t.Fatalf("delta not applied: %v", a.Status().LastError)
	}
	check("delta", 3, false)
	check("delta: the snapshot's grants revoked", 2, true)
}
