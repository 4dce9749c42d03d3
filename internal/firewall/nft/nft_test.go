package nft_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/firewalltest"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
)

// newBackend returns a backend programming a fresh network namespace.
func newBackend(t testing.TB) (*nft.Backend, *testenv.Netns) {
	t.Helper()
	ns := testenv.NewNetns(t)
	b, err := nft.New(nft.WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatalf("nft.New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, ns
}

func TestConformance(t *testing.T) {
	testenv.RequireKernel(t)
	firewalltest.Run(t, func(t *testing.T) firewall.Backend {
		b, _ := newBackend(t)
		return b
	})
}

// gate is two namespaces on one veth link: a client with two IPv4 addresses
// and one IPv6 address, and a server running an echo listener on a port the
// backend protects.
type gate struct {
	client, server *testenv.Netns
	backend        *nft.Backend
	port           uint16
}

const echoPort = 2222

func newGate(t *testing.T) *gate {
	t.Helper()
	client, server := testenv.NewNetns(t), testenv.NewNetns(t)
	testenv.NewLink(t,
		testenv.LinkEnd{NS: client, Name: "eth0", Addrs: prefixes("192.0.2.1/24", "192.0.2.3/24", "2001:db8::1/64")},
		testenv.LinkEnd{NS: server, Name: "eth0", Addrs: prefixes("192.0.2.2/24", "2001:db8::2/64")},
	)
	ln, err := server.Listen("tcp", ":2222")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	b, err := nft.New(nft.WithNetNSFd(server.FD()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &gate{client: client, server: server, backend: b, port: echoPort}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// dial connects from src (a client address) to the server's echo port and
// checks one round trip. A refused gate shows as a timeout: the SYN is dropped.
func (g *gate) dial(src string) (net.Conn, error) {
	s := netip.MustParseAddr(src)
	dst := "192.0.2.2"
	if s.Is6() {
		dst = "2001:db8::2"
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: s.AsSlice()}, Timeout: 300 * time.Millisecond}
	c, err := g.client.DialContext(context.Background(), d, "tcp", net.JoinHostPort(dst, "2222"))
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c net.Conn) error {
	c.SetDeadline(time.Now().Add(time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err
}

func (g *gate) connects(t *testing.T, src string) bool {
	t.Helper()
	c, err := g.dial(src)
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dialing from %s: %v (want success or timeout)", src, err)
		}
		return false
	}
	c.Close()
	return true
}

func (g *gate) apply(t *testing.T, rs firewall.Ruleset) {
	t.Helper()
	if _, err := g.backend.Apply(context.Background(), rs, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestPackets sends real packets through the gate.
func TestPackets(t *testing.T) {
	g := newGate(t)
	port := firewall.PortKey{Proto: firewall.TCP, Port: echoPort}
	grant := func(src string, d time.Duration) firewall.Grant {
		return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: port.Proto, Port: port.Port, Expires: time.Now().Add(d)}
	}
	expect := func(step string, want map[string]bool) {
		t.Helper()
		for src, w := range want {
			if got := g.connects(t, src); got != w {
				t.Errorf("%s: connect from %s = %v, want %v", step, src, got, w)
			}
		}
	}

	expect("unprotected", map[string]bool{"192.0.2.1": true, "192.0.2.3": true, "2001:db8::1": true})

	g.apply(t, firewall.Ruleset{Protected: []firewall.PortKey{port}})
	expect("protected", map[string]bool{"192.0.2.1": false, "192.0.2.3": false, "2001:db8::1": false})

	g.apply(t, firewall.Ruleset{Protected: []firewall.PortKey{port}, Grants: []firewall.Grant{
		grant("192.0.2.1/32", time.Minute), grant("2001:db8::1/128", time.Minute),
	}})
	expect("granted to .1 and ::1", map[string]bool{"192.0.2.1": true, "192.0.2.3": false, "2001:db8::1": true})

	// A short grant: the kernel closes it with no process doing anything,
	// and a connection established before expiry lives on.
	const short = 1500 * time.Millisecond
	start := time.Now()
	g.apply(t, firewall.Ruleset{Protected: []firewall.PortKey{port}, Grants: []firewall.Grant{grant("192.0.2.1/32", short)}})
	est, err := g.dial("192.0.2.1")
	if err != nil {
		t.Fatalf("connect during the short grant: %v", err)
	}
	defer est.Close()
	expect("revoked ::1, short grant to .1", map[string]bool{"2001:db8::1": false})
	time.Sleep(time.Until(start.Add(short + 100*time.Millisecond)))
	expect("after kernel expiry", map[string]bool{"192.0.2.1": false, "192.0.2.3": false})
	if err := echo(est); err != nil {
		t.Errorf("established connection broke at expiry: %v", err)
	}
}
