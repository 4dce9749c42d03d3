package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRawTunnelToRecordedPortRefused: on a port whose rule records, a live
// bastion grant does not open a raw tunnel (the server could not see into
// it): 403 naming the rule and the way that works, no session, and the
// refusal audited. The same grant on an unrecorded port opens one.
func TestRawTunnelToRecordedPortRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := echoPort(t)
	agent := bastionTarget(t, e, port, func(r *wire.PortRule) { r.Record = true })
	relayAgent(t, e, agent)
	grantBastion(t, e.c, port)
	applyDesired(t, agent)

	_, err := dialTunnel(e.c, port)
	if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "recorded") || !strings.Contains(err.Error(), "jitgate ssh") {
		t.Fatalf("raw tunnel to a recorded port: %v, want 403 saying it is recorded and to use jitgate ssh", err)
	}
	if xs, err := e.st.ListSessions(ctx, false, 0); err != nil || len(xs) != 0 {
		t.Errorf("sessions after the refusal: %v, %v; want none", xs, err)
	}
	events, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AccessDenied), Target: "web-01"})
	if err != nil || len(events) != 1 || !strings.Contains(events[0].Reason+" "+stringDetail(events[0], "error"), "recorded") {
		t.Errorf("access.denied events %+v (%v), want one saying the port is recorded", events, err)
	}

	// Recording off: the same grant opens a raw tunnel.
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(3600e9), Access: "bastion"}}})
	conn := openTunnel(t, e.c, port)
	conn.Close()
}

func stringDetail(e audit.Event, key string) string {
	s, _ := e.Details[key].(string)
	return s
}
