package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

var (
	_ firewall.BlockedCounter = (*Backend)(nil)
	_ firewall.Prober         = (*Backend)(nil)
)

// Blocked reads the per-port counters of what the gate dropped: for each
// protected port the packets dropped (the protected set's element counters)
// and the new connections among them (the attempts set's), and in gateway
// mode for each published endpoint the untranslated packets dropped (each
// one a new connection: NAT chains see only those). Counters start at zero
// when a port is first protected and when the table is rebuilt. An absent
// table has no counters. Blocked only reads.
func (b *Backend) Blocked(ctx context.Context) (out []firewall.Blocked, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, end, err := b.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading counters of table inet %s: %w", tableName, err)
	}
	defer func() { err = end(err) }()
	// Only the port sets carry counters: reading the grant sets too made
	// every report cost as much as reading every grant (~200 ms at 10,000).
	ks, err := readKernelSets(c, newLayout(firewall.HostMode, 0), newClock(time.Now()), func(s setSpec) bool {
		return s.role == roleProtected || s.role == roleAttempts || s.role == rolePublished
	})
	if err != nil {
		return nil, fmt.Errorf("reading counters of table inet %s: %w", tableName, err)
	}
	gateway := ks.mode == firewall.GatewayMode
	type key struct {
		port      firewall.PortKey
		published bool
	}
	byKey := map[key]*firewall.Blocked{}
	get := func(k key) *firewall.Blocked {
		if byKey[k] == nil {
			byKey[k] = &firewall.Blocked{Port: k.port, Published: k.published}
		}
		return byKey[k]
	}
	for _, s := range ks.sets {
		r := s.spec.role
		if r != roleProtected && r != roleAttempts && r != rolePublished {
			continue
		}
		for _, e := range s.byID {
			k, err := decodePort(e.key(), gateway, s.spec.v6)
			if err != nil {
				return nil, fmt.Errorf("reading set %s: %w", s.spec.name, err)
			}
			var packets uint64
			if c := e.counter(); c != nil {
				packets = c.Packets
			}
			switch r {
			case roleProtected:
				get(key{port: k}).Packets = packets
			case roleAttempts:
				get(key{port: k}).Connections = packets
			case rolePublished:
				bl := get(key{port: k, published: true})
				bl.Packets, bl.Connections = packets, packets
			}
		}
	}
	for _, bl := range byKey {
		out = append(out, *bl)
	}
	slices.SortFunc(out, func(a, b firewall.Blocked) int {
		if a.Published != b.Published {
			if a.Published {
				return 1
			}
			return -1
		}
		return firewall.ComparePorts(a.Port, b.Port)
	})
	return out, nil
}

// Probe checks, without changing anything, that this process can program
// nftables here: it lists the inet tables, which needs the nf_tables module
// and CAP_NET_ADMIN in the network namespace. The error says which is
// missing.
func (b *Backend) Probe(ctx context.Context) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, end, err := b.begin(ctx)
	if err != nil {
		return explain(err)
	}
	defer func() { err = end(err) }()
	if _, err := tableExists(c); err != nil {
		return explain(err)
	}
	return nil
}

// explain turns the kernel's refusals into what an operator must fix.
func explain(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("no privilege to program nftables (needs root or CAP_NET_ADMIN): %w", err)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("the kernel has no nftables support (nf_tables module missing?): %w", err)
	}
	return fmt.Errorf("cannot program nftables: %w", err)
}
