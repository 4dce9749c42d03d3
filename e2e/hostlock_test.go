package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSecondAgentOnOneHostRefuses: two agents on one host (one network
// namespace), even with different state directories and targets, would
// each reconcile table inet jitgate to their own state. The second refuses
// to start, names the first, and spends nothing (its enrollment token stays
// unused); the first keeps the gate.
func TestSecondAgentOnOneHostRefuses(t *testing.T) {
	l := newLab(t)
	l.startServer()
	first := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	second := cliJSON[wire.TargetCreated](l, "target", "add", "web-02")
	l.startAgent(first.EnrollToken)
	l.eventually("first agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, "target", "show", "web-01").Agent.State == "connected"
	})

	p := l.Start(l.ServerNS, "second jitgate agent", l.Binary, "agent", "--server", fmt.Sprintf("http://127.0.0.1:%d", testlab.APIPort),
		"--enroll-token", second.EnrollToken, "--state-dir", filepath.Join(l.Dir, "agent-2"))
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the second agent on the host is still running")
	}
	out := p.Output()
	for _, want := range []string{"another jitgate agent", fmt.Sprintf("pid %d", l.Agent.Pid()), "target web-01"} {
		if !strings.Contains(out, want) {
			t.Errorf("the second agent's refusal does not name %q:\n%s", want, out)
		}
	}
	if st := cliJSON[wire.Target](l, "target", "show", "web-02").Agent.State; st != "never" {
		t.Errorf("web-02's agent state is %q, want never (the refused agent must not enroll)", st)
	}

	// The first agent still owns the gate.
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h")
	l.waitApplied("web-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Error("port 22 open after the first agent applied the policy")
	}
}
