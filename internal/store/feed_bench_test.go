package store_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// BenchmarkFeedAcrossReplicas measures the change feed between replicas:
// from a request committed through one store handle to the subscriber of
// another handle on the same PostgreSQL database being told (the moment a
// long-polling agent on the other replica wakes). It reports the p50 and
// p99 of that wake.
func BenchmarkFeedAcrossReplicas(b *testing.B) {
	url := testenv.Postgres(b)
	ctx := context.Background()
	a, err := store.OpenPostgres(ctx, url, store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	other, err := store.OpenPostgres(ctx, url, store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer other.Close()
	woke := make(chan time.Time, 64)
	other.Subscribe(func(targets ...string) {
		if slices.Contains(targets, "web-1") {
			select {
			case woke <- time.Now():
			default:
			}
		}
	})
	admin := store.Actor{Name: "admin"}
	now := time.Now()
	if _, _, err := a.CreateTarget(ctx, admin, "web-1", nil, now, time.Hour); err != nil {
		b.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := a.SetPolicy(ctx, admin, "web-1", pol, now); err != nil {
		b.Fatal(err)
	}
	drain := func() {
		for {
			select {
			case <-woke:
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	drain()
	lim := policy.DefaultLimits()
	lim.MaxLivePerRequester, lim.MaxLivePerTarget = 1<<20, 1<<20
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		start := time.Now()
		if _, err := a.CreateRequest(ctx, admin, "web-1", policy.Request{Source: src, Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Duration: time.Hour, Reason: "bench"}, lim, start); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-woke:
			lat = append(lat, at.Sub(start))
		case <-time.After(5 * time.Second):
			b.Fatal("the other replica was not woken")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
