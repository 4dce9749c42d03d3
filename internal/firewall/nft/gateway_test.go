package nft_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
)

// router is three namespaces: a client, a gateway forwarding between two
// links, and a target behind it running an echo listener. The backend and the
// sampler program the gateway.
type router struct {
	client, gw, target *testenv.Netns
	backend            *nft.Backend
	sampler            *nft.Sampler
}

var (
	rClient1 = netip.MustParseAddr("192.0.2.1")
	rClient2 = netip.MustParseAddr("192.0.2.3")
	rClient6 = netip.MustParseAddr("2001:db8::1")
	rPublic  = netip.MustParseAddr("192.0.2.254")
	rPublic6 = netip.MustParseAddr("2001:db8::fe")
	rTarget  = netip.MustParseAddr("198.51.100.10")
	rTarget6 = netip.MustParseAddr("2001:db8:100::10")
)

func newRouter(t *testing.T) *router {
	t.Helper()
	r := &router{client: testenv.NewNetns(t), gw: testenv.NewNetns(t), target: testenv.NewNetns(t)}
	testenv.NewLink(t,
		testenv.LinkEnd{NS: r.client, Name: "eth0", Addrs: prefixes("192.0.2.1/24", "192.0.2.3/24", "2001:db8::1/64")},
		testenv.LinkEnd{NS: r.gw, Name: "eth0", Addrs: prefixes("192.0.2.254/24", "2001:db8::fe/64")},
	)
	testenv.NewLink(t,
		testenv.LinkEnd{NS: r.gw, Name: "eth1", Addrs: prefixes("198.51.100.254/24", "2001:db8:100::fe/64")},
		testenv.LinkEnd{NS: r.target, Name: "eth0", Addrs: prefixes("198.51.100.10/24", "2001:db8:100::10/64")},
	)
	r.client.Run(t, "ip", "route", "add", "default", "via", "192.0.2.254")
	r.client.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8::fe")
	r.target.Run(t, "ip", "route", "add", "default", "via", "198.51.100.254")
	r.target.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:100::fe")
	if err := r.gw.Do(func() error {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := r.target.Listen("tcp", ":2222")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns { // a cut session's server side never hears of it
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	if r.backend, err = nft.New(nft.WithNetNSFd(r.gw.FD())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.backend.Close() })
	if r.sampler, err = nft.NewSampler(nft.WithNetNSFd(r.gw.FD())); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.sampler.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.sampler.Close()
		if err := <-done; err != nil {
			t.Errorf("Sampler.Run: %v", err)
		}
	})
	return r
}

// dial connects from src to dst:port and checks one echo round trip; a
// dropped SYN shows as a timeout (one SYN: the timeout is under the
// retransmission delay).
func (r *router) dial(src, dst netip.Addr, port uint16) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 300 * time.Millisecond}
	c, err := r.client.DialContext(context.Background(), d, "tcp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (r *router) connects(t *testing.T, src, dst netip.Addr, port uint16) bool {
	t.Helper()
	c, err := r.dial(src, dst, port)
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dialing %s -> %s:%d: %v (want success or timeout)", src, dst, port, err)
		}
		return false
	}
	c.Close()
	return true
}

func (r *router) apply(t *testing.T, rs firewall.Ruleset) {
	t.Helper()
	if _, err := r.backend.Apply(context.Background(), rs, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayPackets sends real packets through a gateway: forward-path
// grants for IPv4 and IPv6, DNAT for granted sources only, blocked-attempt
// counters equal to the attempts made, sampled sources, and an established
// connection cut at expiry on a close-established port.
func TestGatewayPackets(t *testing.T) {
	r := newRouter(t)
	echoPort := firewall.PortKey{Proto: firewall.TCP, Port: 2222, Dest: rTarget}
	echoPort6 := firewall.PortKey{Proto: firewall.TCP, Port: 2222, Dest: rTarget6}
	grant := func(src netip.Addr, k firewall.PortKey, d time.Duration) firewall.Grant {
		return firewall.Grant{Source: netip.PrefixFrom(src, src.BitLen()), Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: time.Now().Add(d)}
	}
	public := firewall.Mapping{Target: echoPort, Public: rPublic, PublicPort: 2201}
	public6 := firewall.Mapping{Target: echoPort6, Public: rPublic6, PublicPort: 2201}

	// (From the source granted below: the last packets of this connection
	// may reach the gate once it is up, and must not count as blocked.)
	if !r.connects(t, rClient1, rTarget, 2222) {
		t.Fatal("the target is unreachable through the gateway before any gate")
	}
	rs := firewall.Ruleset{
		Mode:      firewall.GatewayMode,
		Protected: []firewall.PortKey{echoPort, echoPort6},
		Grants:    []firewall.Grant{grant(rClient1, echoPort, time.Minute), grant(rClient6, echoPort6, time.Minute)},
		Published: []firewall.Mapping{public, public6},
	}
	r.apply(t, rs)
	for _, tc := range []struct {
		src, dst netip.Addr
		port     uint16
		want     bool
	}{
		{rClient1, rTarget, 2222, true},
		{rClient2, rTarget, 2222, false},
		{rClient6, rTarget6, 2222, true},
		{rClient1, rPublic, 2201, true}, // DNAT to the target
		{rClient2, rPublic, 2201, false},
		{rClient2, rPublic, 2201, false},
		{rClient6, rPublic6, 2201, true},
	} {
		if got := r.connects(t, tc.src, tc.dst, tc.port); got != tc.want {
			t.Errorf("connect %s -> %s:%d = %v, want %v", tc.src, tc.dst, tc.port, got, tc.want)
		}
	}

	blocked, err := r.backend.Blocked(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []firewall.Blocked{
		{Port: echoPort, Packets: 1, Connections: 1},
		{Port: echoPort6},
		{Port: public.PublicKey(), Published: true, Packets: 2, Connections: 2},
		{Port: public6.PublicKey(), Published: true},
	}
	if diff := cmp.Diff(want, blocked, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Blocked() mismatch (-want +got):\n%s", diff)
	}
	var samples []firewall.Sample
	deadline := time.Now().Add(2 * time.Second)
	for len(samples) < 3 && time.Now().Before(deadline) {
		samples = append(samples, r.sampler.Samples()...)
		time.Sleep(10 * time.Millisecond)
	}
	got := map[netip.AddrPort]int{}
	for _, s := range samples {
		if s.Source != rClient2 || s.Proto != firewall.TCP {
			t.Errorf("unexpected sample %+v", s)
		}
		got[netip.AddrPortFrom(s.Dest, s.Port)]++
	}
	if wantS := map[netip.AddrPort]int{netip.AddrPortFrom(rTarget, 2222): 1, netip.AddrPortFrom(rPublic, 2201): 2}; !cmp.Equal(got, wantS) {
		t.Errorf("samples by destination = %v, want %v", got, wantS)
	}

	// Close-established: a connection made through a short grant is reset
	// at expiry, directly and through DNAT; without the option it lives.
	for _, cut := range []bool{false, true} {
		const short = 1500 * time.Millisecond
		rs.CloseEstablished = nil
		if cut {
			rs.CloseEstablished = []firewall.PortKey{echoPort}
		}
		rs.Grants = []firewall.Grant{grant(rClient1, echoPort, short)}
		start := time.Now()
		r.apply(t, rs)
		direct, err := r.dial(rClient1, rTarget, 2222)
		if err != nil {
			t.Fatalf("cut=%v: connect during the grant: %v", cut, err)
		}
		viaNAT, err := r.dial(rClient1, rPublic, 2201)
		if err != nil {
			t.Fatalf("cut=%v: connect through DNAT during the grant: %v", cut, err)
		}
		// During the grant the established connections live, whichever
		// set (hash or interval) holds the grant's element.
		for name, c := range map[string]net.Conn{"direct": direct, "DNAT": viaNAT} {
			if err := echo(c); err != nil {
				t.Errorf("cut=%v: the %s connection broke during the grant: %v", cut, name, err)
			}
		}
		time.Sleep(time.Until(start.Add(short + 100*time.Millisecond)))
		for name, c := range map[string]net.Conn{"direct": direct, "DNAT": viaNAT} {
			err := echo(c)
			switch {
			case cut && !errors.Is(err, syscall.ECONNRESET):
				t.Errorf("close-established: the %s connection after expiry: %v, want a reset", name, err)
			case !cut && err != nil:
				t.Errorf("keep established: the %s connection broke at expiry: %v", name, err)
			}
			c.Close()
		}
		if r.connects(t, rClient1, rTarget, 2222) {
			t.Errorf("cut=%v: a new connection passes after expiry", cut)
		}
	}
}
