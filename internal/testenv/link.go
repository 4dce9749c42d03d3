package testenv

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// LinkEnd is one end of a veth pair.
type LinkEnd struct {
	// NS is the namespace the interface lives in.
	NS *Netns
	// Name is the interface name inside NS (at most 15 bytes). Both ends may
	// use the same name, since they live in different namespaces.
	Name string
	// Addrs are assigned to the interface, e.g. 192.0.2.1/24 or 2001:db8::1/64.
	Addrs []netip.Prefix
}

// NewLink joins a and b with a veth pair, assigns each end its addresses and
// brings both up. It returns once both ends can carry IPv6 as well as IPv4:
// IPv6 addresses skip duplicate address detection, and NewLink waits for the
// kernel to finish configuring each end (its link-local address appears),
// because a neighbour solicitation sent before that is lost and the first
// IPv6 connection then stalls for a second. The pair needs no cleanup: it
// disappears with the namespaces.
func NewLink(tb testing.TB, a, b LinkEnd) {
	tb.Helper()
	a.NS.Run(tb, "ip", "link", "add", a.Name, "type", "veth", "peer", "name", b.Name, "netns", b.NS.Name())
	for _, end := range []LinkEnd{a, b} {
		for _, p := range end.Addrs {
			args := []string{"addr", "add", p.String(), "dev", end.Name}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			end.NS.Run(tb, "ip", args...)
		}
		end.NS.Run(tb, "ip", "link", "set", end.Name, "up")
	}
	for _, end := range []LinkEnd{a, b} {
		waitIPv6Ready(tb, end)
	}
}

// waitIPv6Ready polls until end has a usable (not tentative) link-local address.
func waitIPv6Ready(tb testing.TB, end LinkEnd) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := end.NS.Run(tb, "ip", "-6", "-o", "addr", "show", "dev", end.Name, "scope", "link")
		if strings.Contains(out, "fe80") && !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("interface %s in %s has no usable link-local address after 5s: %s", end.Name, end.NS.Name(), out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
