//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	bastionSetupTrials  = 150 // recorded
	bastionSetupWarmup  = 5
	bastionIdle         = 1000 // concurrent idle sessions
	bastionIperfSeconds = 8
	iperfRounds         = 3
	// Ports in the server namespace: sshd (22, from the lab), the iperf3
	// server reached through the tunnel, the one reached directly (not in
	// the policy, so the kernel leaves it open), and a service that holds
	// idle connections.
	iperfTunnelPort = 5201
	iperfDirectPort = 5202
	idlePort        = 7000
	// targetThroughputRatio is the target: tunnel ≥ 50 % of direct.
	targetThroughputRatio = 0.5
)

// Bastion is what TestBastion writes to results/bastion.json.
type Bastion struct {
	// Setup is from starting `jitgate connect --stdio --port 22` (in the
	// client namespace, through `ip netns exec`) to the first bytes of
	// sshd's banner on its standard output: process start, WebSocket to the
	// server, grant check and session record, stream to the agent, the
	// agent's check and dial, sshd's banner back.
	Setup Summary `json:"setup_command_to_ssh_banner"`
	// ProcessStart is `jitgate version` run the same way: the share of
	// Setup that is starting a process in the namespace.
	ProcessStart Summary `json:"process_start_jitgate_version"`

	DirectMbps  []float64 `json:"direct_mbps"`
	TunnelMbps  []float64 `json:"tunnel_mbps"`
	Ratio       float64   `json:"tunnel_over_direct_median"`
	TargetRatio float64   `json:"target_ratio"`
	MetRatio    bool      `json:"met_ratio"`

	IdleSessions    int     `json:"idle_sessions"`
	ServerRSSBefore int64   `json:"server_rss_before_bytes"`
	ServerRSSIdle   int64   `json:"server_rss_with_idle_bytes"`
	AgentRSSBefore  int64   `json:"agent_rss_before_bytes"`
	AgentRSSIdle    int64   `json:"agent_rss_with_idle_bytes"`
	ServerPerSessKB float64 `json:"server_kb_per_session"`
	AgentPerSessKB  float64 `json:"agent_kb_per_session"`
	OpenAllSeconds  float64 `json:"open_all_seconds"`
	Load            string  `json:"loadavg"`
}

// TestBastion measures the bastion relay in the two-namespace lab with the
// real server and agent: tunnel set-up from the command to the SSH banner,
// iperf3 throughput through a tunnel against the direct path in the same
// run, and the memory of the server and the agent holding 1,000 idle
// sessions.
func TestBastion(t *testing.T) {
	l := testlab.New(t)
	// One client address opens a thousand WebSockets: the per-address
	// connection cap (64, and 16 × for authenticated ones) is off here.
	l.StartServer("--max-conns-per-address", "-1", "--max-tunnels-per-principal", "2000")
	api := l.APIClient()
	ctx := context.Background()
	created, err := api.CreateTarget(ctx, wire.TargetCreate{Name: target})
	if err != nil {
		t.Fatal(err)
	}
	l.StartAgent(created.EnrollToken)
	waitAgent(t, l, api)
	var rules []wire.PortRule
	for _, p := range []uint16{22, iperfTunnelPort, idlePort} {
		rules = append(rules, wire.PortRule{Port: p, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"})
	}
	if _, err := api.SetPolicy(ctx, target, wire.Policy{Rules: rules}); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, l, api)
	req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"22/tcp", "5201/tcp", "7000/tcp"}, Bastion: true,
		Duration: wire.Duration(time.Hour), Reason: "bastion benchmark"})
	if err != nil {
		t.Fatal(err)
	}
	l.Eventually("the bastion grant is active", 10*time.Second, func() bool {
		r, err := api.Request(ctx, req.ID)
		return err == nil && r.State == "active"
	})
	load, _ := os.ReadFile("/proc/loadavg")
	res := Bastion{TargetRatio: targetThroughputRatio, Load: strings.TrimSpace(string(load))}

	benchIdleSessions(t, l, &res)
	benchSetup(t, l, &res)
	benchThroughput(t, l, &res)

	t.Logf("set-up command → SSH banner: %s", res.Setup)
	t.Logf("process start alone (jitgate version): %s", res.ProcessStart)
	t.Logf("throughput direct %v Mbit/s, tunnel %v Mbit/s: ratio %.2f (target %.2f)", res.DirectMbps, res.TunnelMbps, res.Ratio, res.TargetRatio)
	t.Logf("%d idle sessions: server RSS %d → %d MiB (%.1f KiB/session), agent RSS %d → %d MiB (%.1f KiB/session); opened in %.1f s",
		res.IdleSessions, res.ServerRSSBefore>>20, res.ServerRSSIdle>>20, res.ServerPerSessKB, res.AgentRSSBefore>>20, res.AgentRSSIdle>>20,
		res.AgentPerSessKB, res.OpenAllSeconds)
	writeResult(t, "bastion", res)
}

// cliEnv is the environment of a jitgate client command in the lab.
func cliEnv(l *testlab.Lab) []string {
	return append(os.Environ(), "JITGATE_SERVER="+testlab.ServerURL, "JITGATE_TOKEN="+l.Token, "HOME="+l.Dir)
}

// benchSetup times `jitgate connect --stdio --port 22` from its start to
// sshd's banner, and `jitgate version` for the cost of starting a process.
func benchSetup(t *testing.T, l *testlab.Lab, res *Bastion) {
	one := func() time.Duration {
		cmd := l.ClientNS.Command(context.Background(), l.Binary, "connect", "--stdio", "--port", "22", target)
		cmd.Env = cliEnv(l)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		banner, err := bufio.NewReader(out).ReadString('\n')
		took := time.Since(start)
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Fatalf("no SSH banner through the tunnel: %q, %v; stderr: %s", banner, err, stderr.String())
		}
		return took
	}
	var ds []time.Duration
	for i := range bastionSetupWarmup + bastionSetupTrials {
		d := one()
		if i >= bastionSetupWarmup {
			ds = append(ds, d)
		}
	}
	res.Setup = summarize(ds)
	ds = ds[:0]
	for range bastionSetupTrials {
		cmd := l.ClientNS.Command(context.Background(), l.Binary, "version")
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("jitgate version: %v: %s", err, out)
		}
		ds = append(ds, time.Since(start))
	}
	res.ProcessStart = summarize(ds)
}

// benchThroughput runs iperf3 from the client to the server namespace,
// directly (a port outside the policy) and through `jitgate connect`'s
// local listener, alternating, and keeps each run's received rate.
func benchThroughput(t *testing.T, l *testlab.Lab, res *Bastion) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Fatal("iperf3 is needed (Debian package iperf3)")
	}
	for _, p := range []int{iperfTunnelPort, iperfDirectPort} {
		l.Start(l.ServerNS, fmt.Sprintf("iperf3 server %d", p), "iperf3", "-s", "-p", fmt.Sprint(p))
	}
	local := "127.0.0.1:15201"
	l.Start(l.ClientNS, "jitgate connect (iperf3)", l.Binary, "connect", target, "--port", fmt.Sprint(iperfTunnelPort), "--local", local,
		"--server", testlab.ServerURL, "--token", l.Token)
	l.Eventually("iperf3 servers and the local tunnel listening", 10*time.Second, func() bool {
		return l.CanConnect(testlab.Client1, testlab.ServerIP, iperfDirectPort) && l.ClientNS.Do(func() error {
			c, err := net.DialTimeout("tcp", local, 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	iperf := func(host string, port int) float64 {
		for attempt := 0; ; attempt++ {
			out, err := l.ClientNS.Command(context.Background(), "iperf3", "-c", host, "-p", fmt.Sprint(port), "-t", fmt.Sprint(bastionIperfSeconds), "-J").Output()
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
				Error string `json:"error"`
			}
			if jerr := json.Unmarshal(out, &r); err == nil && jerr == nil && r.Error == "" {
				return r.End.SumReceived.BitsPerSecond / 1e6
			}
			// iperf3's server serves one test at a time and may still be
			// finishing the previous one.
			if attempt == 3 {
				t.Fatalf("iperf3 to %s:%d: %v %s: %s", host, port, err, r.Error, out)
			}
			time.Sleep(time.Second)
		}
	}
	for range iperfRounds {
		res.DirectMbps = append(res.DirectMbps, iperf(testlab.ServerIP.String(), iperfDirectPort))
		res.TunnelMbps = append(res.TunnelMbps, iperf("127.0.0.1", 15201))
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	res.Ratio = median(res.TunnelMbps) / median(res.DirectMbps)
	res.MetRatio = res.Ratio >= targetThroughputRatio
}

// benchIdleSessions opens bastionIdle tunnels to a service that holds its
// connections and sends nothing, and reads the server's and the agent's
// RSS before and with them all live.
func benchIdleSessions(t *testing.T, l *testlab.Lab, res *Bastion) {
	ln, err := l.ServerNS.Listen("tcp", fmt.Sprintf(":%d", idlePort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var held atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { io.Copy(io.Discard, c); c.Close(); held.Add(-1) }()
		}
	}()
	rss := func() (server, agent int64) {
		var err error
		if server, err = l.Server.RSS(); err != nil {
			t.Fatal(err)
		}
		if agent, err = l.Agent.RSS(); err != nil {
			t.Fatal(err)
		}
		return server, agent
	}
	res.ServerRSSBefore, res.AgentRSSBefore = rss()

	// The tunnels' own client, without the 60 s timeout of APIClient.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
	}}
	c, err := client.New(testlab.ServerURL, l.Token, client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns := make([]net.Conn, bastionIdle)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, bastionIdle)
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cn, err := c.Tunnel(ctx, target, idlePort)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = cn
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("opening idle tunnels: %v", err)
	}
	l.Eventually("every idle tunnel reached the service", 60*time.Second, func() bool { return held.Load() == bastionIdle })
	res.OpenAllSeconds = time.Since(start).Seconds()
	ss, err := c.Sessions(context.Background(), true)
	if err != nil || len(ss) != bastionIdle {
		t.Fatalf("live sessions: %d, %v; want %d", len(ss), err, bastionIdle)
	}
	// Let the first keepalives and any lazy allocation happen.
	time.Sleep(15 * time.Second)
	res.IdleSessions = bastionIdle
	res.ServerRSSIdle, res.AgentRSSIdle = rss()
	res.ServerPerSessKB = float64(res.ServerRSSIdle-res.ServerRSSBefore) / 1024 / bastionIdle
	res.AgentPerSessKB = float64(res.AgentRSSIdle-res.AgentRSSBefore) / 1024 / bastionIdle
	for _, cn := range conns {
		if cn != nil {
			cn.Close()
		}
	}
	l.Eventually("every idle session ended", 60*time.Second, func() bool {
		ss, err := c.Sessions(context.Background(), true)
		return err == nil && len(ss) == 0 && held.Load() == 0
	})
	tr.CloseIdleConnections()
}
