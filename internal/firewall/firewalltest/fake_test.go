package firewalltest_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/firewalltest"
)

func TestFakeConformance(t *testing.T) {
	firewalltest.Run(t, func(t *testing.T) firewall.Backend {
		f := firewalltest.NewFake()
		t.Cleanup(func() { f.Close() })
		return f
	})
}

// TestFakeClock checks that the fake ages elements by the now it is given,
// not by the wall clock, so loops can be tested with a synthetic clock.
func TestFakeClock(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ssh := firewall.PortKey{Proto: firewall.TCP, Port: 22}
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{
		{Source: netip.MustParsePrefix("192.0.2.1/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: t0.Add(time.Hour)},
	}}
	f := firewalltest.NewFake()
	if _, err := f.Apply(ctx, rs, t0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{{59 * time.Minute, 1}, {time.Hour, 0}} {
		st, err := f.State(ctx, t0.Add(tc.at))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Elements) != tc.want {
			t.Errorf("at +%v the fake holds %d elements, want %d", tc.at, len(st.Elements), tc.want)
		}
	}
	res, err := f.Apply(ctx, rs, t0.Add(2*time.Hour))
	if err != nil || res.Changed {
		t.Errorf("re-apply after expiry = %+v, %v; want no change", res, err)
	}
}

func TestFakeBatchesAndFailures(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	ssh := firewall.PortKey{Proto: firewall.TCP, Port: 22}
	f := firewalltest.NewFake()
	apply := func(rs firewall.Ruleset) error {
		_, err := f.Apply(ctx, rs, now)
		return err
	}
	protect := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	grant := firewall.Ruleset{Protected: protect.Protected, Grants: []firewall.Grant{
		{Source: netip.MustParsePrefix("192.0.2.1/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)},
	}}
	for _, rs := range []firewall.Ruleset{protect, protect, grant, grant} {
		if err := apply(rs); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.Batches(); got != 2 {
		t.Errorf("Batches() = %d after two changing and two no-op Applies, want 2", got)
	}

	boom := errors.New("boom")
	f.FailNext(boom)
	if err := apply(protect); !errors.Is(err, boom) {
		t.Fatalf("Apply after FailNext = %v, want %v", err, boom)
	}
	st, _ := f.State(ctx, now)
	if len(st.Elements) != 1 || f.Batches() != 2 {
		t.Errorf("a failed Apply changed the fake: %d elements, %d batches", len(st.Elements), f.Batches())
	}
	if err := apply(protect); err != nil {
		t.Errorf("FailNext failed more than one Apply: %v", err)
	}
}
