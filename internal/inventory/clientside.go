package inventory

import (
	"fmt"
	"net/netip"
)

// Bypass says why a gateway does not gate an address: the gateway reaches
// it through the link its clients come in on, so a client on that link
// reaches it directly, without its packets ever being forwarded (and
// checked) by the gateway.
type Bypass struct {
	Address netip.Addr
	// Link is the gateway's interface, Prefix the most specific prefix
	// reached through it that holds Address.
	Link   string
	Prefix netip.Prefix
	// Why the link is a client side: it holds the public address, or a
	// default route leaves through it.
	Why string
}

// Explain says it in a sentence that names the gateway.
func (b Bypass) Explain(gateway string) string {
	return fmt.Sprintf("%s is on the client side of gateway %s (interface %s, %s, where %s): clients there reach it without passing the gateway",
		b.Address, gateway, b.Link, b.Prefix, b.Why)
}

// ClientSide checks addr against what a gateway reported of its links. The
// client side of a gateway is the link through which it reaches its public
// address (where clients connect to published ports) and every link a
// default route leaves through (where clients from elsewhere arrive). addr is
// on the client side when the most specific prefix holding it is reached
// through such a link; the longest match is what the gateway's own routing
// uses, so an address in a narrower protected network carved out of a wider
// client network is not on the client side. ok is false when addr is not on
// the client side, or when the inventory says nothing of links (an agent
// older than the check, or not in gateway mode).
func ClientSide(inv *Host, public, addr netip.Addr) (b Bypass, ok bool) {
	if inv == nil || len(inv.Links) == 0 {
		return Bypass{}, false
	}
	lookup := func(a netip.Addr) (link string, best netip.Prefix) {
		for _, l := range inv.Links {
			for _, s := range l.Prefixes {
				p, err := netip.ParsePrefix(s)
				if err != nil || !p.Contains(a) {
					continue
				}
				if !best.IsValid() || p.Bits() > best.Bits() {
					link, best = l.Name, p
				}
			}
		}
		return link, best
	}
	why := map[string]string{}
	for _, l := range inv.Links {
		if l.Default {
			why[l.Name] = "a default route leaves"
		}
	}
	if public = public.Unmap(); public.IsValid() {
		if l, p := lookup(public); p.IsValid() {
			why[l] = fmt.Sprintf("clients reach the public address %s", public)
		}
	}
	addr = addr.Unmap()
	l, p := lookup(addr)
	if !p.IsValid() || why[l] == "" {
		return Bypass{}, false
	}
	return Bypass{Address: addr, Link: l, Prefix: p, Why: why[l]}, true
}
