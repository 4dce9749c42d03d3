package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Set keys are concatenations in network byte order, each field padded with
// zeros to a multiple of 4 bytes (the kernel's 32-bit register size):
//
//	protected: proto(1)+pad(3) . port(2)+pad(2)                   8 bytes
//	grants4:   addr(4) . proto(1)+pad(3) . port(2)+pad(2)        12 bytes
//	grants6:   addr(16) . proto(1)+pad(3) . port(2)+pad(2)       24 bytes

func portKeyBytes(k firewall.PortKey) []byte {
	b := make([]byte, 8)
	b[0] = byte(k.Proto)
	binary.BigEndian.PutUint16(b[4:], k.Port)
	return b
}

func decodePortKey(b []byte) (firewall.PortKey, error) {
	if len(b) != 8 {
		return firewall.PortKey{}, fmt.Errorf("protected key has %d bytes, want 8", len(b))
	}
	return firewall.PortKey{Proto: firewall.Protocol(b[0]), Port: binary.BigEndian.Uint16(b[4:])}, nil
}

func grantKeyBytes(a netip.Addr, proto firewall.Protocol, port uint16) []byte {
	b := append(a.AsSlice(), byte(proto), 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[len(b)-4:], port)
	return b
}

// decodeGrantKey splits a grant key into its address, protocol and port.
func decodeGrantKey(b []byte) (netip.Addr, firewall.Protocol, uint16, error) {
	if len(b) != 12 && len(b) != 24 {
		return netip.Addr{}, 0, 0, fmt.Errorf("grant key has %d bytes, want 12 or 24", len(b))
	}
	n := len(b) - 8
	a, _ := netip.AddrFromSlice(b[:n])
	return a, firewall.Protocol(b[n]), binary.BigEndian.Uint16(b[n+4:]), nil
}

// decodeGrantRange turns a kernel element's key and key end into an element
// key. A missing key end is a single address.
func decodeGrantRange(key, keyEnd []byte) (firewall.ElementKey, error) {
	from, proto, port, err := decodeGrantKey(key)
	if err != nil {
		return firewall.ElementKey{}, err
	}
	to := from
	if len(keyEnd) > 0 {
		var p2 firewall.Protocol
		var port2 uint16
		to, p2, port2, err = decodeGrantKey(keyEnd)
		if err != nil {
			return firewall.ElementKey{}, err
		}
		if len(keyEnd) != len(key) || p2 != proto || port2 != port {
			return firewall.ElementKey{}, fmt.Errorf("element %x-%x spans several protocols or ports", key, keyEnd)
		}
	}
	return firewall.ElementKey{From: from, To: to, Proto: proto, Port: port}, nil
}

// validElement reports whether k can be written to a grant set: a
// well-formed range of one family. Ruleset.Elements yields only such ranges;
// this is the last line of defence. Skipping a malformed element keeps one
// bad grant from failing every Apply, and fails closed.
func validElement(k firewall.ElementKey) bool {
	return k.From.IsValid() && k.To.IsValid() && k.From.Zone() == "" && k.To.Zone() == "" &&
		k.From.Is4() == k.To.Is4() && !k.To.Less(k.From)
}

// Each grant element carries its intended deadline as an nft comment (which
// `nft list` shows). The kernel reports only the time left, and a dump of
// thousands of elements takes tens of milliseconds during which that time is
// computed element by element, so the deadline derived from it is uncertain
// by the duration of the dump; and the kernel starts each timeout when it
// processes the element, up to the duration of the batch after Apply chose
// it. The comment gives the exact deadline back, which keeps a large Apply
// idempotent. readElements trusts the comment only when it agrees with the
// time left to within commentSlack.
const (
	untilPrefix = "jitgate:until="
	untilLayout = "2006-01-02T15:04:05.000Z07:00" // fixed width for UTC
	// commentSlack bounds how far a comment may disagree with the kernel's
	// time left: the duration of a large batch, plus margin. A larger gap
	// means the element was not written by us or the wall clock was
	// stepped; the kernel's time left then wins (and Apply rewrites the
	// element if that is off).
	commentSlack = 5 * time.Second
)

func untilComment(deadline time.Time) string {
	return untilPrefix + deadline.UTC().Format(untilLayout)
}

func parseUntil(comment string) (time.Time, bool) {
	v, ok := strings.CutPrefix(comment, untilPrefix)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(untilLayout, v)
	return t, err == nil
}
