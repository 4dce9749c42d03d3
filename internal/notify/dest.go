package notify

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nonPublic are the ranges, besides loopback, link-local, private,
// multicast and unspecified addresses, that a webhook must not reach
// without AllowPrivate: "this network", carrier-grade NAT (where some
// clouds put their metadata services), IETF protocol assignments,
// benchmarking, reserved and broadcast, and IPv4 inside NAT64 and 6to4.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fec0::/10"), // site-local (deprecated, still routed where configured)
}

// ErrPrivateAddress is a webhook destination that is not public.
var ErrPrivateAddress = errors.New("a loopback, link-local, private or otherwise non-public address")

// CheckAddr refuses an address a webhook may not be delivered to unless
// private destinations are allowed: loopback, link-local, private (RFC 1918,
// ULA), unspecified, multicast and the other non-public ranges above.
// IPv4-mapped IPv6 addresses are judged as IPv4.
func CheckAddr(a netip.Addr, allowPrivate bool) error {
	if allowPrivate {
		return nil
	}
	a = a.Unmap().WithZone("")
	bad := !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsPrivate() || a.IsUnspecified()
	for _, p := range nonPublic {
		bad = bad || p.Contains(a)
	}
	if bad {
		return fmt.Errorf("%s is %w (allow with jitgate server --webhook-allow-private)", a, ErrPrivateAddress)
	}
	return nil
}

// CheckURL refuses, when a webhook is added, a URL whose host is a literal
// non-public address or a name for this host (localhost). Other names are
// resolved, and checked, when each delivery dials.
func CheckURL(u *url.URL, allowPrivate bool) error {
	if allowPrivate {
		return nil
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("%s names this host: %w (allow with jitgate server --webhook-allow-private)", host, ErrPrivateAddress)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return CheckAddr(a, false)
	}
	if a, ok := legacyIPv4(host); ok {
		return CheckAddr(a, false)
	}
	return nil
}

// legacyIPv4 reads the forms of an IPv4 address that inet_aton, and with it
// getaddrinfo, curl and many proxies, accept besides the dotted quad: one to
// four parts, each decimal, octal (leading 0) or hexadecimal (0x), the last
// filling the remaining bytes ("2130706433", "0x7f.1", "127.1", "0177.0.0.1"
// are all 127.0.0.1). Go's resolver reads them as names (and the dial-time
// check would catch what they resolve to), but a URL holding one is an
// address in disguise and is judged as the address when it is added.
func legacyIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base, digits := 10, p
		switch {
		case len(p) > 1 && (p[:2] == "0x" || p[:2] == "0X"):
			base, digits = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		if digits == "" && base != 16 {
			return netip.Addr{}, false
		}
		v := uint64(0)
		if digits != "" {
			var err error
			if v, err = strconv.ParseUint(digits, base, 32); err != nil {
				return netip.Addr{}, false
			}
		}
		vals[i] = v
	}
	// All but the last part are one byte; the last fills the rest.
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// guardedTransport is an HTTP transport that refuses, at connect time, every
// address CheckAddr refuses: the check sees the address after resolution,
// so DNS cannot smuggle a private address past it (nor can a name whose
// answer changes between two lookups). It uses no proxy from the
// environment.
func guardedTransport(allowPrivate bool) *http.Transport {
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("webhook destination %q: %w", address, err)
			}
			if err := CheckAddr(ap.Addr(), allowPrivate); err != nil {
				return fmt.Errorf("refusing to deliver to %w", err)
			}
			return nil
		},
	}
	return &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
