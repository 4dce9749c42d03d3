package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// probe asks the backend whether it can enforce at all; backends that
// cannot tell are assumed able.
func (a *Agent) probe(ctx context.Context) error {
	p, ok := a.backend.(firewall.Prober)
	if !ok {
		return nil
	}
	return p.Probe(ctx)
}

// reportFresh is Agent.reportFresh's default. The report of a delta goes
// out as soon as the kernel holds it: it reads the host's addresses and the
// gate's counters (a netlink dump each, 0.3-0.5 ms on a loaded machine, the
// largest part of the time from the kernel's commit to the report, and so to
// the server recording the grant active) only when their last reading is
// older than this, and carries the last reading meanwhile. The console's
// counters are at most this late after a burst of grants.
const reportFresh = time.Second

// freshness is the last reading of what a report carries besides the
// revision (zero after a full apply: read again).
type freshness struct {
	addrs      []string
	addrsAt    time.Time
	counters   []wire.BlockedCounter
	countersAt time.Time
}

// addresses returns the host's addresses for a report: the last reading
// while it is fresh (reportFresh).
func (a *Agent) addresses() []string {
	if a.fresh.addrs == nil || time.Since(a.fresh.addrsAt) >= a.reportFresh {
		a.fresh.addrs, a.fresh.addrsAt = hostAddresses(), time.Now()
	}
	return a.fresh.addrs
}

// blocked reads the backend's counters for the report (the last reading
// while it is fresh, see reportFresh); nil when the backend does not count
// or cannot be read (the report goes out anyway).
func (a *Agent) blocked(ctx context.Context) []wire.BlockedCounter {
	bc, ok := a.backend.(firewall.BlockedCounter)
	if !ok || (a.inventory != nil && !a.inventory.CanEnforce) {
		return nil
	}
	if a.fresh.counters != nil && time.Since(a.fresh.countersAt) < a.reportFresh {
		return a.fresh.counters
	}
	counters, err := bc.Blocked(ctx)
	if err != nil {
		a.log.Debug("cannot read blocked counters", "err", err)
		return nil
	}
	out := make([]wire.BlockedCounter, 0, len(counters))
	for _, c := range counters {
		w := wire.BlockedCounter{Protocol: c.Port.Proto.String(), Port: c.Port.Port, Packets: c.Packets, Connections: c.Connections}
		if c.Port.Dest.IsValid() {
			w.Destination = c.Port.Dest.String()
		}
		out = append(out, w)
	}
	a.fresh.counters, a.fresh.countersAt = out, time.Now()
	return out
}

type sourceKey struct {
	source, dest, proto string
	port                uint16
}

// drainSources merges the newly sampled attempts into the sources not yet
// reported and returns them, busiest first. In host mode the destination is
// the host itself and is left out, as in the counters.
func (a *Agent) drainSources() []wire.BlockedSource {
	if a.cfg.Sampler != nil {
		for _, s := range a.cfg.Sampler.Samples() {
			k := sourceKey{source: s.Source.Unmap().String(), proto: s.Proto.String(), port: s.Port}
			if a.cfg.Mode == firewall.GatewayMode && s.Dest.IsValid() {
				k.dest = s.Dest.Unmap().String()
			}
			bs := a.sources[k]
			if bs == nil {
				bs = &wire.BlockedSource{Source: k.source, Destination: k.dest, Protocol: k.proto, Port: k.port}
				a.sources[k] = bs
			}
			bs.Count++
			if s.At.After(bs.LastSeen) {
				bs.LastSeen = s.At
			}
		}
	}
	if len(a.sources) == 0 {
		return nil
	}
	out := make([]wire.BlockedSource, 0, len(a.sources))
	for _, bs := range a.sources {
		out = append(out, *bs)
	}
	slices.SortFunc(out, func(x, y wire.BlockedSource) int {
		if x.Count != y.Count {
			return y.Count - x.Count
		}
		return strings.Compare(x.Source+x.Destination, y.Source+y.Destination)
	})
	return out
}

func sameInventory(a, b *wire.Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
