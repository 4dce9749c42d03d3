package testlab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Replica is one `jitgate server` process of a replicated lab: several
// servers in the server namespace on one PostgreSQL database, each with its
// own data directory and port, sharing one SSH CA key file.
type Replica struct {
	Name string
	Port uint16
	// Proc is the process last started (Start restarts it).
	Proc *Proc
	l    *Lab
	args []string
}

// URL is the replica's address as the client namespace reaches it.
func (r *Replica) URL() string {
	return fmt.Sprintf("http://%s", netip.AddrPortFrom(ServerIP, r.Port))
}

// Start starts (or restarts) the replica and waits until it accepts
// connections.
func (r *Replica) Start() {
	r.l.tb.Helper()
	r.Proc = r.l.Start(r.l.ServerNS, "jitgate server "+r.Name, r.l.Binary, r.args...)
	r.l.Eventually("replica "+r.Name+" listening", 30*time.Second, func() bool { return r.l.CanConnect(Client1, ServerIP, r.Port) })
}

// Kill kills the replica with SIGKILL.
func (r *Replica) Kill() { r.Proc.Kill() }

// StartReplicas starts n servers (replicas "a", "b", …) on the PostgreSQL
// database at database, on ports APIPort, APIPort+1, …, with
// --activation-timeout DefaultActivationTimeout and extraFlags, one after
// the other (the first makes the admin token and records the SSH CA key).
// From then on the agent is given every replica's address, the first
// first (so it polls replica a), and the CLI and APIClient every replica's
// URL, the second first (so requests reach another replica than the
// agent's, and the change feed carries them across). Lab.Server is the
// first replica's process.
func (l *Lab) StartReplicas(database string, n int, extraFlags ...string) []*Replica {
	l.tb.Helper()
	var agent, clients []string
	for i := range n {
		name := string(rune('a' + i))
		port := uint16(APIPort + i)
		r := &Replica{Name: name, Port: port, l: l, args: append([]string{"server",
			"--listen", fmt.Sprintf("0.0.0.0:%d", port), "--data-dir", filepath.Join(l.Dir, "server-"+name),
			"--database", database, "--replica-id", name, "--activation-timeout", DefaultActivationTimeout.String(),
			"--ssh-ca-key-file", filepath.Join(l.Dir, "ssh_ca_ed25519")}, extraFlags...)}
		r.Start()
		l.Replicas = append(l.Replicas, r)
		agent = append(agent, fmt.Sprintf("http://127.0.0.1:%d", port))
		clients = append(clients, r.URL())
	}
	tok, err := os.ReadFile(filepath.Join(l.Dir, "server-a", "admin.token"))
	if err != nil {
		l.tb.Fatalf("reading the admin token replica a made: %v", err)
	}
	l.Token = strings.TrimSpace(string(tok))
	l.Server = l.Replicas[0].Proc
	l.agentServers = strings.Join(agent, ",")
	if n > 1 {
		clients = append(clients[1:], clients[0])
	}
	l.clientServers = strings.Join(clients, ",")
	return l.Replicas
}
