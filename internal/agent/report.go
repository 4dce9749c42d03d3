package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

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

// blocked reads the backend's counters for the report; nil when the
// backend does not count or cannot be read (the report goes out anyway).
func (a *Agent) blocked(ctx context.Context) []wire.BlockedCounter {
	bc, ok := a.backend.(firewall.BlockedCounter)
	if !ok || (a.inventory != nil && !a.inventory.CanEnforce) {
		return nil
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
