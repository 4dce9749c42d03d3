package agent

import (
	"math"
	"runtime/debug"

	"github.com/jitgate/jitgate/internal/firewall"
)

// The Go runtime lets the heap grow to twice what was live after its last
// collection (GOGC=100) before it collects again, and keeps what it freed
// resident for a while. At a million grants the agent's state is ~300 MB
// live and a restart's apply briefly needs ~100 MB more (the desired sets
// beside the cache read from the state file): left alone, the process
// peaked near 800 MB for 400 MB ever live together. With Config.SizeMemory
// the agent sets a soft memory limit (debug.SetMemoryLimit) scaled to the
// state it holds: memBase plus memPerGrant a grant (twice that in gateway
// mode, whose DNAT maps hold a translation beside most elements), which is
// above what the agent has live at once at that size, so the collector only
// runs earlier than GOGC would, never without end. It is a soft limit: a
// state larger than the agent knew of makes the collector work harder, it
// never fails an allocation. An operator's GOMEMLIMIT wins (the command
// leaves SizeMemory off then).
const (
	memBase     = 64 << 20
	memPerGrant = 450
)

// memoryLimitFor is the soft memory limit for a state of grants grants.
func memoryLimitFor(grants int, mode firewall.Mode) int64 {
	per := int64(memPerGrant)
	if mode == firewall.GatewayMode {
		per *= 2
	}
	return memBase + int64(grants)*per
}

// sizeMemory sets the soft memory limit for a state of grants grants
// (Config.SizeMemory), when it moved by more than a tenth since it was
// last set. Below memBase's worth of grants it leaves the runtime's
// default (no limit) alone.
func (a *Agent) sizeMemory(grants int) {
	if !a.cfg.SizeMemory {
		return
	}
	if grants < 10_000 && a.memGrants == 0 {
		return
	}
	if a.memGrants > 0 && grants <= a.memGrants+a.memGrants/10 && grants >= a.memGrants-a.memGrants/10 {
		return
	}
	a.memGrants = max(grants, 1)
	limit := memoryLimitFor(grants, a.cfg.Mode)
	if grants < 10_000 {
		limit = math.MaxInt64
	}
	debug.SetMemoryLimit(limit)
	a.log.Debug("memory limit sized to the state", "grants", grants, "limit_mib", limit>>20)
}
