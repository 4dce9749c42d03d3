package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/replica"
	"github.com/jitgate/jitgate/internal/webterm"
)

// termOnB is te with its terminal opened at replica B instead of A.
func termOnB(te *termEnv, p *replicaPair) *termEnv {
	envB := *te.env
	envB.srv = p.b
	return &termEnv{env: &envB, port: te.port, alice: te.alice, req: te.req}
}

// TestTerminalAcrossReplicas: the browser terminal reaches a target whose
// agent's relay connection is on replica A when the browser's WebSocket
// arrives at replica B (two API servers on one database): B checks the
// grant, signs the certificate with the one SSH CA, forwards the stream to
// A (which checks the grant again) and runs the SSH client over it; the
// session is recorded as B's terminal and listed on A; a kill through A
// ends B's terminal, naming the killer. With a replica secret A does not
// share, B gets no stream and the terminal ends saying the agent is not
// connected.
func TestTerminalAcrossReplicas(t *testing.T) {
	ca, host := newCASigner(t), newCASigner(t)
	for _, tt := range []struct {
		name    string
		secretB replica.Secret
		shared  bool
	}{
		{"shared secret", replicaSecret, true},
		{"other secret", otherSecret, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newReplicaPair(t, tt.secretB, func(d *api.Deps) { d.SSHCA = ca })
			te := termEnvOn(t, p.a, ca, host, nil)
			// B finds the agent's connection on A once A has recorded
			// it, which may be after the connection is up.
			p.waitRelayRoute(t, "web-01")
			tc := dialTerm(t, termOnB(te, p), "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 80, Rows: 24})
			if !tt.shared {
				if end := tc.waitEnd(t); end.Reason != "agent_lost" || !strings.Contains(end.Message, "not connected") {
					t.Fatalf("terminal through a replica with another secret ended %+v; want agent_lost, not connected", end)
				}
				return
			}
			tc.waitOutput(t, "")
			if err := tc.ws.Write(context.Background(), websocket.MessageBinary, []byte("across-7\r")); err != nil {
				t.Fatal(err)
			}
			tc.waitOutput(t, "echo: across-7")
			xs, err := p.a.c.Sessions(context.Background(), true)
			if err != nil || len(xs) != 1 || xs[0].Via != "terminal" || xs[0].Login != "ubuntu" || xs[0].Principal != "alice2" {
				t.Fatalf("live sessions listed on A: %+v, %v; want alice2's terminal as ubuntu", xs, err)
			}
			if _, err := p.a.c.KillSession(context.Background(), xs[0].ID, "ended on A"); err != nil {
				t.Fatal(err)
			}
			end := tc.waitEnd(t)
			if end.Reason != "killed" || !strings.Contains(end.Message, "alice") || !strings.Contains(end.Message, "ended on A") {
				t.Fatalf("end %+v: want killed by alice through A, with the reason", end)
			}
			got := sessionByID(t, p.cB, xs[0].ID)
			if got.State != "ended" || got.EndReason != "killed" {
				t.Errorf("session after the kill = %+v; want ended, killed", got)
			}
		})
	}
}
