package agent

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/wire"
)

// tunneler opens the agent's outbound relay connection; *client.Client
// implements it.
type tunneler interface {
	AgentTunnel(ctx context.Context) (net.Conn, error)
}

// relayAgent returns the agent's relay side, made on first use.
func (a *Agent) relayAgent() *relay.Agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.relay == nil {
		a.relay = &relay.Agent{Log: a.log, State: func() (wire.DesiredState, bool) {
			ds := a.relayState.Load()
			if ds == nil {
				return wire.DesiredState{}, false
			}
			return *ds, true
		}}
	}
	return a.relay
}

// setRelayState gives the relay the desired state just received, and ends
// the streams it no longer allows. A state the agent refuses as a rollback
// (a revision below its high-water mark) grants nothing through the relay
// either, as it opens nothing in the kernel; nor does one it could not
// apply at all: of the other mode than the agent's own (--mode), or
// malformed. Without this a host agent sent a gateway-mode state (by a
// compromised or confused server) would dial whatever address that state
// names, from inside the host's network, instead of only 127.0.0.1.
//
// The relay's deadlines are the grants' on the earlier of the two clocks,
// as the kernel's are (toRuleset): a grant's deadline moves earlier by the
// server clock's lead over the agent's, estimated from the state's server
// time and recvAt, when it arrived. An agent whose clock is behind would
// otherwise keep relaying a stream after its grant ended.
func (a *Agent) setRelayState(ds wire.DesiredState, recvAt time.Time) {
	if ds.Revision < a.highWater {
		ds.Bastion = nil
	}
	if _, err := toRuleset(ds, 0, a.cfg.Mode); err != nil {
		ds.Bastion = nil
	}
	if shift := skewShift(ds.ServerTime, recvAt); shift > 0 && len(ds.Bastion) > 0 {
		bs := make([]wire.BastionGrant, len(ds.Bastion))
		for i, g := range ds.Bastion {
			g.ExpiresAt = g.ExpiresAt.Add(-shift)
			bs[i] = g
		}
		ds.Bastion = bs
	}
	// The relay checks streams against the bastion entries and the rules,
	// never the kernel grants: it does not keep them (a million of them,
	// which the loop's held state also edits in place).
	ds.Grants = nil
	a.relayState.Store(&ds)
	a.relayAgent().Recheck(ds)
}

// runRelay keeps the agent's one outbound relay connection to the server
// open, reconnecting with backoff, until ctx ends. The target needs no
// inbound port: the server opens the bastion's streams on this connection,
// and the agent checks each against its own desired state (relay.Authorize).
// A 401 or 410 stops it (the main loop stops the agent for those).
func (a *Agent) runRelay(ctx context.Context, t tunneler) {
	bo := newBackoff(a.minBackoff, a.maxBackoff)
	ra := a.relayAgent()
	for ctx.Err() == nil {
		conn, err := t.AgentTunnel(ctx)
		if err != nil {
			if st := client.StatusOf(err); st == http.StatusUnauthorized || st == http.StatusGone {
				return
			}
			d := bo.NextBackOff()
			a.log.Warn("bastion relay: cannot connect; retrying", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		a.log.Info("bastion relay connected", "server", a.Status().Server)
		start := time.Now()
		err = ra.ServeConn(ctx, conn)
		if time.Since(start) > 10*time.Second {
			bo.Reset()
		}
		if ctx.Err() != nil {
			return
		}
		d := bo.NextBackOff()
		a.log.Warn("bastion relay connection ended; reconnecting", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return
		}
	}
}
