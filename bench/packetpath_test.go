//go:build bench

package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
)

const (
	packetGrants   = 100_000
	packetWindow   = 5 * time.Second        // per configuration and round
	packetSlice    = 500 * time.Millisecond // windows are measured in alternating slices
	packetRounds   = 3
	packetDialers  = 2
	packetSettle   = 2 * time.Second
	targetRatio100 = 0.90
)

// The second server host, which holds the 100,000 grants.
var (
	bigClient = netip.MustParseAddr("198.51.100.1")
	bigServer = netip.MustParseAddr("198.51.100.2")
)

// PacketPath is what TestPacketPath writes to results/packet_path.json.
type PacketPath struct {
	Dialers       int     `json:"dialers"`
	WindowSeconds float64 `json:"window_s"`
	SliceSeconds  float64 `json:"slice_s"`
	// Elements read back from each server's grant set.
	Elements0    int `json:"elements_read_back_0"`
	Elements100k int `json:"elements_read_back_100k"`
	// LoadSeconds is the one Apply that added the 100,000 elements.
	LoadSeconds float64 `json:"load_apply_s"`
	// Per round, new connections per second.
	Rates0    []float64 `json:"conn_per_s_0"`
	Rates100k []float64 `json:"conn_per_s_100k"`
	Errors    int64     `json:"errors"`
	// Median of the rounds of each configuration.
	Median0    float64 `json:"median_conn_per_s_0"`
	Median100k float64 `json:"median_conn_per_s_100k"`
	Ratio      float64 `json:"ratio_100k_over_0"`
	// Ratios per round (same round, same background load).
	RoundRatios []float64 `json:"round_ratios"`
	// ControlRatio is one round with both hosts holding only the client's
	// grant (before the 100,000 were loaded): the paths' own difference.
	ControlRatio float64 `json:"control_ratio_1_over_1"`
	Target       float64 `json:"target_ratio"`
	Met          bool    `json:"met"`
}

// TestPacketPath measures new TCP connections per second from a granted
// source through the protected port with 0 and with 100,000 other grants in
// the set.
//
// The two configurations live side by side so that they can be interleaved
// finely without reloading: the lab's server holds only the client's grant;
// a second server host, linked to the same client host, holds the client's
// grant plus 100,000 others. Each round measures each configuration for
// 5 s in alternating 0.5 s slices (ABBA order), so both see the same
// background load of a shared machine. A control round before the load,
// with one element on each side, shows how alike the two paths are.
func TestPacketPath(t *testing.T) {
	l := testlab.New(t)
	big := testenv.NewNetns(t)
	testenv.NewLink(t,
		testenv.LinkEnd{NS: l.ClientNS, Name: "eth1", Addrs: []netip.Prefix{netip.PrefixFrom(bigClient, 24)}},
		testenv.LinkEnd{NS: big, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(bigServer, 24)}})
	serve(t, l.ServerNS, benchPort)
	serve(t, big, benchPort)
	// Client-side sockets end with a reset (linger 0), so no TIME_WAIT
	// exhausts the source's ports; allow the whole port range anyway.
	l.ClientNS.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535")

	ctx := context.Background()
	port := firewall.PortKey{Proto: firewall.TCP, Port: benchPort}
	now := time.Now()
	grant := func(a netip.Addr, exp time.Time) firewall.Grant {
		return firewall.Grant{Source: netip.PrefixFrom(a, 32), Proto: port.Proto, Port: port.Port, Expires: exp}
	}
	small := firewall.Ruleset{Protected: []firewall.PortKey{port}, Grants: []firewall.Grant{grant(testlab.Client1, now.Add(time.Hour))}}
	large := firewall.Ruleset{Protected: []firewall.PortKey{port}, Grants: []firewall.Grant{grant(bigClient, now.Add(time.Hour))}}
	// 198.18.0.0/15 (RFC 2544 benchmarking range), inside the namespace only.
	a := netip.MustParseAddr("198.18.0.0")
	for i := range packetGrants {
		// Alternate deadlines so that neighbouring addresses stay separate elements.
		large.Grants = append(large.Grants, grant(a, now.Add(time.Hour+time.Duration(i%2)*time.Second)))
		a = a.Next()
	}

	res := PacketPath{Dialers: packetDialers, WindowSeconds: packetWindow.Seconds(), SliceSeconds: packetSlice.Seconds(), Target: targetRatio100}
	apply := func(ns *testenv.Netns, rs firewall.Ruleset) (time.Duration, int) {
		t.Helper()
		be, err := nft.New(nft.WithNetNSFd(ns.FD()))
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		start := time.Now()
		if _, err := be.Apply(ctx, rs, time.Now()); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		st, err := be.State(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return took, len(st.Elements)
	}
	to0 := dialTarget{testlab.Client1, netip.AddrPortFrom(testlab.ServerIP, benchPort)}
	to100k := dialTarget{bigClient, netip.AddrPortFrom(bigServer, benchPort)}
	// round measures both hosts for packetWindow each, in alternating slices.
	round := func() (r0, r100k float64) {
		var c0, c100k int64
		for i := range int(packetWindow / packetSlice) {
			order := []dialTarget{to0, to100k}
			if i%2 == 1 {
				order = []dialTarget{to100k, to0}
			}
			for _, to := range order {
				conns, errs := measure(t, l.ClientNS, to, packetSlice)
				res.Errors += errs
				if to == to0 {
					c0 += conns
				} else {
					c100k += conns
				}
			}
		}
		return float64(c0) / packetWindow.Seconds(), float64(c100k) / packetWindow.Seconds()
	}

	_, res.Elements0 = apply(l.ServerNS, small)
	if err := waitClosed(l.ClientNS, testlab.Client2, time.Second); err != nil {
		t.Fatalf("the protected port is open to a source without a grant: %v", err)
	}
	// Control: both hosts with only the client's grant, to show how alike
	// the two paths are apart from the set's size.
	apply(big, firewall.Ruleset{Protected: large.Protected, Grants: large.Grants[:1]})
	measure(t, l.ClientNS, to0, time.Second) // warm-up, not recorded
	measure(t, l.ClientNS, to100k, time.Second)
	c0, c1 := round()
	res.ControlRatio = c1 / c0
	t.Logf("control, both hosts with 1 element: %7.0f and %7.0f new connections/s (ratio %.3f)", c0, c1, res.ControlRatio)

	took, n := apply(big, large)
	res.LoadSeconds, res.Elements100k = took.Seconds(), n
	t.Logf("loaded %d elements in one Apply in %.2f s; read back %d and %d elements", packetGrants+1, took.Seconds(), res.Elements0, res.Elements100k)
	if res.Elements0 != 1 || res.Elements100k != packetGrants+1 {
		t.Fatalf("elements read back: %d and %d, want 1 and %d", res.Elements0, res.Elements100k, packetGrants+1)
	}
	runtime.GC()
	time.Sleep(packetSettle)
	for i := range packetRounds {
		r0, r100k := round()
		res.Rates0, res.Rates100k = append(res.Rates0, r0), append(res.Rates100k, r100k)
		res.RoundRatios = append(res.RoundRatios, r100k/r0)
		t.Logf("round %d: %7.0f new connections/s with 0 other grants, %7.0f with 100,000 (ratio %.3f)", i+1, r0, r100k, r100k/r0)
	}
	res.Median0, res.Median100k = median(res.Rates0), median(res.Rates100k)
	res.Ratio = res.Median100k / res.Median0
	res.Met = res.Ratio >= targetRatio100
	t.Logf("median: %.0f/s with 0, %.0f/s with 100,000 grants; ratio %.3f (target >= %.2f: %v); %d failed connections",
		res.Median0, res.Median100k, res.Ratio, targetRatio100, res.Met, res.Errors)
	writeResult(t, "packet_path", res)
}

type dialTarget struct {
	src netip.Addr
	dst netip.AddrPort
}

// measure opens and closes connections to.src -> to.dst from packetDialers
// goroutines in ns for d, and returns how many completed and how many failed.
func measure(t *testing.T, ns *testenv.Netns, to dialTarget, d time.Duration) (conns, errs int64) {
	t.Helper()
	var wg sync.WaitGroup
	var n, e atomic.Int64
	end := time.Now().Add(d)
	for range packetDialers {
		wg.Go(func() {
			err := ns.Do(func() error {
				dialer := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: to.src.AsSlice()}}
				for time.Now().Before(end) {
					c, err := dialer.Dial("tcp", to.dst.String())
					if err != nil {
						if e.Add(1) > 100 {
							return fmt.Errorf("too many failed connections, last: %w", err)
						}
						continue
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					n.Add(1)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	return n.Load(), e.Load()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
