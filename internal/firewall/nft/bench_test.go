package nft_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// BenchmarkApply measures Apply against a gate holding 10,000 grants: adding
// one grant, and a no-op (the cost of reading the kernel and diffing).
func BenchmarkApply(b *testing.B) {
	ssh := firewall.PortKey{Proto: firewall.TCP, Port: 22}
	now := time.Now()
	base := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	for a := netip.MustParseAddr("2001:db8::"); len(base.Grants) < 10000; a = a.Next() {
		// Alternate deadlines so that neighbouring addresses do not merge.
		exp := now.Add(time.Hour + time.Duration(len(base.Grants)%2)*time.Second)
		base.Grants = append(base.Grants, firewall.Grant{Source: netip.PrefixFrom(a, 128), Proto: ssh.Proto, Port: ssh.Port, Expires: exp})
	}
	ctx := context.Background()
	setup := func(b *testing.B) firewall.Backend {
		be, _ := newBackend(b)
		if _, err := be.Apply(ctx, base, time.Now()); err != nil {
			b.Fatal(err)
		}
		return be
	}

	b.Run("AddOneTo10000", func(b *testing.B) {
		be := setup(b)
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			if _, err := be.Apply(ctx, base, time.Now()); err != nil { // drop the previous extra grant
				b.Fatal(err)
			}
			rs := base
			extra := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			rs.Grants = append(rs.Grants[:len(rs.Grants):len(rs.Grants)], firewall.Grant{Source: netip.PrefixFrom(extra, 32), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)})
			b.StartTimer()
			res, err := be.Apply(ctx, rs, time.Now())
			if err != nil || res.Added != 1 {
				b.Fatalf("Apply = %+v, %v; want one added", res, err)
			}
		}
	})

	b.Run("Noop10000", func(b *testing.B) {
		be := setup(b)
		for b.Loop() {
			res, err := be.Apply(ctx, base, time.Now())
			if err != nil || res.Changed {
				b.Fatalf("Apply = %+v, %v; want no change", res, err)
			}
		}
	})
}

// BenchmarkApplyDelta measures the agent's incremental path against a gate
// holding 10,000 and 100,000 grants: one grant added through an Index and
// ApplyDelta (the Index update and the batch; no read of the table), then
// removed the same way.
func BenchmarkApplyDelta(b *testing.B) {
	ssh := firewall.PortKey{Proto: firewall.TCP, Port: 22}
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("OneChangeAt%d", n), func(b *testing.B) {
			now := time.Now()
			base := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
			for a := netip.MustParseAddr("2001:db8::"); len(base.Grants) < n; a = a.Next() {
				exp := now.Add(time.Hour + time.Duration(len(base.Grants)%2)*time.Second)
				base.Grants = append(base.Grants, firewall.Grant{Source: netip.PrefixFrom(a, 128), Proto: ssh.Proto, Port: ssh.Port, Expires: exp})
			}
			be, _ := newBackend(b)
			ctx := context.Background()
			if _, err := be.Apply(ctx, base, time.Now()); err != nil {
				b.Fatal(err)
			}
			var da firewall.DeltaApplier = be
			x := firewall.NewIndex(base, now)
			for i := 0; b.Loop(); i++ {
				g := []firewall.Grant{{Source: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 32), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)}}
				for _, step := range [][2][]firewall.Grant{{nil, g}, {g, nil}} {
					t := time.Now()
					if _, err := da.ApplyDelta(ctx, x.Update(step[0], step[1], t), t); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(2*b.N)/1000, "ms/change")
		})
	}
}
