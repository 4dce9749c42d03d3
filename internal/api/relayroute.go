package api

import (
	"context"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// relayRoutes keeps this replica's route of each target's agent (the row
// other replicas read to forward a stream here, replicas.go) while any
// relay connection of that agent is being set up or served here, and only
// then. The database holds one route per target and replica, so the
// connections of one agent here share it: a connection's end removes it
// only when no other connection of the agent is left here. Keyed to each
// connection instead, a second attempt's route replaced the live
// connection's, and that attempt's end (a handshake that failed; or the
// relay keeping the older connection when two raced, relay.Server keeping
// whichever registered last) removed the only route of a connection still
// up (TestRelayRouteKeptWhenAHandshakeFails). The writes of one target's
// route are serialized here, so that a removal and a new connection's
// write cannot interleave.
type relayRoutes struct {
	mu sync.Mutex
	m  map[string]*relayRoute
}

// relayRoute is one target's route on this replica.
type relayRoute struct {
	users int        // handlers holding or waiting for it; guarded by relayRoutes.mu
	mu    sync.Mutex // serializes the route's writes
	held  int        // connections counted in the route; guarded by mu
	conn  string     // the route's conn as last written; guarded by mu
}

// hold writes (or refreshes) target's route on this replica and counts one
// more connection of its agent here. The returned release uncounts it, and
// removes the route when it was the last. On error nothing was counted, and
// a route of other connections is left as it was.
func (a *api) holdRelayRoute(ctx context.Context, target string) (release func(), err error) {
	rr := a.relayRoutes.enter(target)
	rr.mu.Lock()
	conn := store.NewRelayConnID()
	if err := a.Store.SetRelayRoute(ctx, target, a.Replica.ID, conn, a.Now()); err != nil {
		rr.mu.Unlock()
		a.relayRoutes.leave(target, rr)
		return nil, err
	}
	rr.conn = conn
	rr.held++
	rr.mu.Unlock()
	return func() {
		rr.mu.Lock()
		if rr.held--; rr.held == 0 {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := a.Store.DeleteRelayRoute(dctx, target, a.Replica.ID, rr.conn); err != nil {
				a.Logger.Error("removing the agent's relay route", "target", target, "err", err)
			}
			cancel()
		}
		rr.mu.Unlock()
		a.relayRoutes.leave(target, rr)
	}, nil
}

func (l *relayRoutes) enter(target string) *relayRoute {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*relayRoute{}
	}
	rr := l.m[target]
	if rr == nil {
		rr = &relayRoute{}
		l.m[target] = rr
	}
	rr.users++
	return rr
}

func (l *relayRoutes) leave(target string, rr *relayRoute) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rr.users--; rr.users == 0 {
		delete(l.m, target)
	}
}
