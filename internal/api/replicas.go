package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/replica"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// The bastion across replicas. Several servers share one database; an
// agent's relay connection is held by one of them (A), a client's tunnel
// may arrive at another (B). A records in the database which agents are
// connected to it (relay_routes) and keeps its own row live (replicas,
// internal/server); B, finding no relay connection of the target's agent
// itself, checks the grant as always, records the session, and forwards the
// stream to A over a WebSocket to A's internal endpoint GET
// /api/v1/replica/tunnel, authenticated by the replicas' shared secret
// (internal/replica: a MAC, never the secret itself, no replay). A checks
// the MAC, then checks the grant again itself (a live bastion grant of
// that principal for that target and port, on a port whose rule allows the
// bastion) before it opens the stream on the agent's connection and
// splices; it ends the stream at the grant's end on its own. B keeps the
// session: bytes, watch, end, kill. The endpoint is no open proxy: without
// the secret nothing passes, and with it only a stream a live grant allows.

// Replica places this server among replicas sharing one database.
type Replica struct {
	// ID names this replica in the database (stable per data directory).
	ID string
	// Address is the base URL other replicas reach this one at for
	// forwarded bastion streams ("" : it accepts none).
	Address string
	// Secret is the replicas' shared secret; nil turns forwarding off both
	// ways (the endpoint then refuses everything).
	Secret replica.Secret
	// HTTP dials other replicas (default: a client with a 5 s dial time-out).
	HTTP *http.Client
}

// forwarding reports whether streams may be forwarded to other replicas.
func (a *api) forwarding() bool { return a.Replica != nil && len(a.Replica.Secret) > 0 }

// replicaID is this replica's id ("" when alone).
func (a *api) replicaID() string {
	if a.Replica == nil {
		return ""
	}
	return a.Replica.ID
}

// forwardQuery is what B tells A of a stream: A trusts none of it beyond
// looking the grant up again.
func forwardQuery(target string, port policy.Port, principal, sessionID string) url.Values {
	return url.Values{"target": {target}, "port": {strconv.Itoa(int(port.Number))}, "principal": {principal}, "session": {sessionID}}
}

// forward opens the stream of session sessionID to port of target through
// the replica that holds the relay connection of via (the target's agent,
// or its gateway's), trying the replicas the database names, newest
// connection first. It returns relay.ErrNoAgent when none holds it, a
// *relay.Refusal when the agent refused, and errForbidden when the other
// replica found no live grant.
func (a *api) forward(ctx context.Context, via, target string, port policy.Port, principal, sessionID string) (net.Conn, string, error) {
	routes, err := a.Store.RelayRoutes(ctx, via, a.Replica.ID, a.Now())
	if err != nil {
		return nil, "", err
	}
	hc := a.Replica.HTTP
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}
	}
	for _, rt := range routes {
		// The replica the stream is for is in the signed query, so that a
		// captured request is not accepted by another replica (whose
		// nonces are its own) within the MAC's window.
		fq := forwardQuery(target, port, principal, sessionID)
		fq.Set("replica", rt.Replica)
		u := strings.TrimRight(rt.Address, "/") + "/api/v1/replica/tunnel?" + fq.Encode()
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			a.Logger.Warn("bastion: bad replica address", "replica", rt.Replica, "address", rt.Address, "err", err)
			continue
		}
		a.Replica.Secret.Sign(req, time.Now())
		// The stream outlives the call's context (which bounds only the
		// opening): it ends when either side closes it.
		conn, resp, err := relay.DialWS(context.WithoutCancel(ctx), u, hc, req.Header)
		if err == nil {
			a.Logger.Info("bastion stream forwarded", "session", sessionID, "target", target, "via", via, "replica", rt.Replica)
			return conn, rt.Address, nil
		}
		status, msg := 0, err.Error()
		if resp != nil {
			status = resp.StatusCode
			if resp.Body != nil {
				var e wire.Error
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				if json.Unmarshal(data, &e) == nil && e.Error != "" {
					msg = e.Error
				}
			}
		}
		switch status {
		case http.StatusBadGateway:
			return nil, "", &relay.Refusal{Reason: strings.TrimPrefix(msg, "the target's agent refused the tunnel: ")}
		case http.StatusForbidden, http.StatusNotFound:
			return nil, "", fmt.Errorf("the replica holding the agent's connection refused the stream (%s): %w", msg, errForbidden)
		}
		// Not connected there any more, or the replica is unreachable:
		// the next one.
		a.Logger.Warn("bastion: forwarding to a replica failed", "session", sessionID, "replica", rt.Replica, "status", status, "err", msg)
	}
	return nil, "", relay.ErrNoAgent
}

// replicaAlive reports whether the replica at address answers its health
// check: a forwarded stream that ended while it does not ended because it
// (and so the agent's connection) was lost.
func (a *api) replicaAlive(address string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(address, "/")+"/healthz", nil)
	if err != nil {
		return false
	}
	hc := a.Replica.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// replicaTunnel is the internal endpoint another replica forwards a
// bastion stream to. A request without the replica header goes through
// the usual authentication (401 without a credential; 403 with any: no
// person or agent may use it); one with it must carry a valid MAC (401
// otherwise), and then the grant is checked here again.
func (a *api) replicaTunnel(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(replica.Header) == "" {
		a.auth(func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
			return fmt.Errorf("only another jitgate replica may forward a bastion stream: %w", errForbidden)
		}, store.KindAdmin).ServeHTTP(w, r)
		return
	}
	var secret replica.Secret
	if a.Replica != nil {
		secret = a.Replica.Secret
	}
	if err := a.verifier.Verify(secret, r, time.Now()); err != nil {
		a.Logger.Warn("bastion: refused a replica stream", "client", a.clientAddr(r), "err", err)
		writeError(w, a.Logger, store.ErrUnauthorized)
		return
	}
	if to := r.URL.Query().Get("replica"); to != a.replicaID() {
		// Signed for another replica: a copy replayed here.
		a.Logger.Warn("bastion: refused a replica stream signed for another replica", "client", a.clientAddr(r), "for", to)
		writeError(w, a.Logger, store.ErrUnauthorized)
		return
	}
	httpedge.Authenticated(r)
	if err := a.serveForwarded(w, r); err != nil {
		writeError(w, a.Logger, err)
	}
}

func (a *api) serveForwarded(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	name, principal, sessionID := q.Get("target"), q.Get("principal"), q.Get("session")
	if name == "" || principal == "" || sessionID == "" {
		return badRequest("target, port, principal and session are required")
	}
	port, err := policy.ParsePort(q.Get("port"))
	if err != nil || port.Protocol != policy.TCP {
		return invalidField("port", "a TCP port is required")
	}
	// The grant again, here: the replica that forwarded checked it, but
	// this one opens the stream and answers for it.
	t, err := a.Store.GetTarget(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no target %s: %w", name, errForbidden)
	}
	if err != nil {
		return err
	}
	if _, err := bastionRule(t, port); err != nil {
		return fmt.Errorf("%v: %w", err, errForbidden)
	}
	now := a.Now()
	g, err := a.Store.BastionGrant(r.Context(), name, principal, port, now)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s holds no live bastion grant for %s on %s: %w", principal, port, name, errForbidden)
	}
	if err != nil {
		return err
	}
	via := name
	if t.Gateway != "" {
		via = t.Gateway
	}
	octx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	st, err := a.Relay.Open(octx, via, relay.Header{Session: sessionID, RequestID: g.RequestID, Principal: principal, Protocol: string(port.Protocol),
		Port: port.Number, Deadline: g.ExpiresAt})
	cancel()
	var refusal *relay.Refusal
	switch {
	case errors.Is(err, relay.ErrNoAgent):
		return errStatus(http.StatusServiceUnavailable, "the agent of %s is not connected to this replica", via)
	case errors.As(err, &refusal):
		return errStatus(http.StatusBadGateway, "%v", refusal)
	case err != nil:
		return errStatus(http.StatusBadGateway, "opening the tunnel to %s: %v", name, err)
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(r.Context()))
	defer stop()
	conn, err := relay.AcceptWS(ctx, w, r)
	if err != nil {
		st.Close()
		return nil // AcceptWS answered
	}
	a.Logger.Info("bastion stream from another replica", "session", sessionID, "target", name, "principal", principal, "port", port, "until", g.ExpiresAt)
	// This end also stops at the grant's end, whatever the other replica
	// does (it watches the session; this is the backstop).
	x := session.Session{ID: sessionID, Target: name, Principal: principal, RequestID: g.RequestID, Protocol: string(port.Protocol), Port: port.Number,
		Deadline: g.ExpiresAt, State: session.Live}
	go func() {
		for {
			ch := a.Hub.Watch(name)
			// recorded: this end cannot tell a forwarded terminal (which
			// the other replica records) from a tunnel; the replica that
			// holds the session ends it when it is not recorded.
			reason, _, deadline, _ := a.grantCheck(ctx, x, true)
			if reason != "" {
				closeHard(conn)
				closeHard(st)
				return
			}
			if deadline.IsZero() {
				deadline = x.Deadline
			}
			timer := time.NewTimer(max(min(time.Until(deadline), credentialRecheck), 0))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-ch:
			case <-timer.C:
			}
			timer.Stop()
		}
	}()
	relay.Splice(conn, st, nil)
	return nil
}

func closeHard(c net.Conn) {
	c.SetDeadline(time.Unix(1, 0))
	c.Close()
}
