package agent

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"

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

// listeners reads /proc/net/{tcp,tcp6,udp,udp6} (parsed by
// prometheus/procfs): TCP sockets in LISTEN state and bound, unconnected
// UDP sockets, with the process owning each when the agent may see it.
func (p procFS) listeners() []wire.Listener {
	fs, err := procfs.NewFS(string(p))
	if err != nil {
		return nil
	}
	owners := p.socketOwners()
	const tcpListen, udpUnconnected = 0x0A, 0x07 // TCP_LISTEN; TCP_CLOSE: bound, not connected
	var out []wire.Listener
	for _, f := range []struct {
		read  func() (procfs.NetTCP, error)
		proto string
		state uint64
	}{
		// procfs marks its /proc/net/tcp readers deprecated in favour of
		// sock_diag over netlink, which cannot be tested on fixture files
		// and needs a parser of its own; the files stay a stable kernel ABI.
		{fs.NetTCP, "tcp", tcpListen}, {fs.NetTCP6, "tcp", tcpListen}, //nolint:staticcheck // see above
		{udpLines(fs.NetUDP), "udp", udpUnconnected}, {udpLines(fs.NetUDP6), "udp", udpUnconnected},
	} {
		lines, err := f.read()
		if err != nil {
			continue
		}
		for _, l := range lines {
			if l.St != f.state || l.LocalPort == 0 || l.LocalPort > 65535 {
				continue
			}
			if f.proto == "udp" && l.RemPort != 0 {
				continue // connected
			}
			addr, ok := netip.AddrFromSlice(l.LocalAddr)
			if !ok {
				continue
			}
			out = append(out, wire.Listener{Address: addr.Unmap().String(), Port: uint16(l.LocalPort), Protocol: f.proto,
				Process: owners[strconv.FormatUint(l.Inode, 10)]})
		}
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

// udpLines reads a UDP table as procfs's TCP type (both are lists of the
// same unexported socket line).
func udpLines(read func() (procfs.NetUDP, error)) func() (procfs.NetTCP, error) {
	return func() (procfs.NetTCP, error) { l, err := read(); return procfs.NetTCP(l), err }
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
	if fs, err := procfs.NewFS(string(p)); err == nil {
		lines, _ := fs.NetRoute()
		for _, l := range lines {
			if l.Iface == "lo" {
				continue
			}
			// procfs gives the hex words as read; the kernel wrote them in
			// its (little-endian) byte order.
			var a [4]byte
			binary.LittleEndian.PutUint32(a[:], l.Destination)
			bits := 0
			for m := bits32(l.Mask); m&0x80000000 != 0; m <<= 1 {
				bits++
			}
			out = append(out, route{l.Iface, netip.PrefixFrom(netip.AddrFrom4(a), bits)})
		}
	}
	// procfs does not parse /proc/net/ipv6_route.
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

// bits32 turns a netmask word as the kernel wrote it (little-endian) into
// its value in network order, for counting its leading ones.
func bits32(le uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], le)
	return binary.BigEndian.Uint32(b[:])
}
