package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// procRoot is where the inventory reads /proc; tests point it at fixtures.
type procFS string

const hostProc procFS = "/proc"

// inventory describes the host: its name, kernel, listening sockets, in
// gateway mode the networks it routes to, and whether the gate can be
// enforced here (probeErr is the backend's answer). It reads the network
// namespace the agent runs in. Unreadable parts are left out: an inventory
// is a report, never a reason to stop.
func (p procFS) inventory(mode firewall.Mode, probeErr error) *wire.Inventory {
	inv := &wire.Inventory{CanEnforce: probeErr == nil}
	if probeErr != nil {
		inv.Reason = probeErr.Error()
	}
	inv.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile(filepath.Join(string(p), "sys/kernel/osrelease")); err == nil {
		inv.Kernel = strings.TrimSpace(string(b))
	}
	inv.Listening = p.listeners()
	if mode == firewall.GatewayMode {
		table := p.routeTable()
		inv.Routes, inv.Links = routes(table), links(table)
	}
	return inv
}

// listeners parses /proc/net/{tcp,tcp6,udp,udp6}: TCP sockets in LISTEN
// state and bound, unconnected UDP sockets, with the process owning each
// when the agent may see it.
func (p procFS) listeners() []wire.Listener {
	owners := p.socketOwners()
	var out []wire.Listener
	for _, f := range []struct{ file, proto, state string }{
		{"tcp", "tcp", "0A"}, {"tcp6", "tcp", "0A"}, // TCP_LISTEN
		{"udp", "udp", "07"}, {"udp6", "udp", "07"}, // TCP_CLOSE: bound, not connected
	} {
		fh, err := os.Open(filepath.Join(string(p), "net", f.file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			cols := strings.Fields(sc.Text())
			if len(cols) < 10 || cols[3] != f.state {
				continue
			}
			addr, port, err := parseProcAddr(cols[1])
			if err != nil || port == 0 {
				continue
			}
			if f.proto == "udp" {
				if _, rport, err := parseProcAddr(cols[2]); err != nil || rport != 0 {
					continue // connected
				}
			}
			out = append(out, wire.Listener{Address: addr.String(), Port: port, Protocol: f.proto, Process: owners[cols[9]]})
		}
		fh.Close()
	}
	slices.SortFunc(out, func(a, b wire.Listener) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Address, b.Address)
	})
	return slices.Compact(out)
}

// parseProcAddr reads "0100007F:0016": an address in the kernel's byte
// order (each 32-bit word little-endian on the machines we run on) and a
// big-endian hex port.
func parseProcAddr(s string) (netip.Addr, uint16, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("no port in %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	b, err := hex.DecodeString(a)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", a)
	}
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(b[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr.Unmap(), uint16(port), nil
}

// socketOwners maps socket inodes to the name of a process holding them.
// Without the privilege to read other processes' descriptors it finds only
// the agent's own, which is fine.
func (p procFS) socketOwners() map[string]string {
	out := map[string]string{}
	pids, _ := filepath.Glob(filepath.Join(string(p), "[0-9]*"))
	for _, dir := range pids {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(dir, "comm"))
				comm = strings.TrimSpace(string(b))
			}
			out[strings.TrimSuffix(inode, "]")] = comm
		}
	}
	return out
}

// route is one entry of the main routing table.
type route struct {
	dev string
	dst netip.Prefix
}

// routeTable reads /proc/net/route and /proc/net/ipv6_route: every route
// with the interface it leaves through, loopback left out.
func (p procFS) routeTable() []route {
	var out []route
	if b, err := os.ReadFile(filepath.Join(string(p), "net/route")); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			cols := strings.Fields(line)
			if len(cols) < 8 || cols[0] == "lo" {
				continue
			}
			dst, err1 := hexLE32(cols[1])
			mask, err2 := hexLE32(cols[7])
			if err1 != nil || err2 != nil {
				continue
			}
			bits := 0
			for m := mask; m&0x80000000 != 0; m <<= 1 {
				bits++
			}
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], dst)
			out = append(out, route{cols[0], netip.PrefixFrom(netip.AddrFrom4(a), bits)})
		}
	}
	if b, err := os.ReadFile(filepath.Join(string(p), "net/ipv6_route")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			cols := strings.Fields(line)
			if len(cols) < 10 || cols[9] == "lo" {
				continue
			}
			raw, err := hex.DecodeString(cols[0])
			bits, err2 := strconv.ParseUint(cols[1], 16, 8)
			if err != nil || err2 != nil || len(raw) != 16 {
				continue
			}
			out = append(out, route{cols[9], netip.PrefixFrom(netip.AddrFrom16([16]byte(raw)), int(bits))})
		}
	}
	return out
}

// forwardable reports whether a route's prefix is one a gateway forwards
// clients to: not a default route, loopback, link-local or multicast.
func forwardable(pfx netip.Prefix) bool {
	a := pfx.Addr()
	return pfx.IsValid() && pfx.Bits() != 0 && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast()
}

// routes lists the prefixes the host routes to: connected networks and
// routes, without default routes, loopback, link-local and multicast.
func routes(table []route) []string {
	var s []string
	for _, r := range table {
		if forwardable(r.dst) {
			s = append(s, r.dst.Masked().String())
		}
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// links groups the routes by interface, and says which interfaces carry a
// default route: what the server needs to find the gateway's client side.
func links(table []route) []wire.Link {
	byName := map[string]*wire.Link{}
	var names []string
	for _, r := range table {
		l, ok := byName[r.dev]
		if !ok {
			l = &wire.Link{Name: r.dev}
			byName[r.dev] = l
			names = append(names, r.dev)
		}
		switch {
		case r.dst.IsValid() && r.dst.Bits() == 0:
			l.Default = true
		case forwardable(r.dst):
			l.Prefixes = append(l.Prefixes, r.dst.Masked().String())
		}
	}
	slices.Sort(names)
	var out []wire.Link
	for _, n := range names {
		l := byName[n]
		if len(l.Prefixes) == 0 && !l.Default {
			continue
		}
		slices.Sort(l.Prefixes)
		l.Prefixes = slices.Compact(l.Prefixes)
		out = append(out, *l)
	}
	return out
}

func hexLE32(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, err
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return binary.LittleEndian.Uint32(b[:]), nil
}
