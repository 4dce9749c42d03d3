//go:build bench

package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	peerTrials       = 100 // recorded per system and mode
	peerWarmup       = 5
	peerExpiryTrials = 5
	peerGrant        = 3 * time.Second // for expiry and crash trials
	peerCrashWatch   = 6 * time.Second // how long past the deadline a crash trial watches
	targetPeerRatio  = 20.0            // fwknop default-mode p50 / jitgate p50
)

// Peers is what TestPeers writes to results/peers.json.
type Peers struct {
	Trials int `json:"trials"`
	// From the request (the API call; the fwknop client started) to the
	// first connection through the grant.
	Jitgate    Summary `json:"jitgate_open"`
	FwknopPcap Summary `json:"fwknop_pcap_open"`
	FwknopUDP  Summary `json:"fwknop_udp_open"`
	// The request alone: the API call; the fwknop client process.
	JitgateCall    Summary `json:"jitgate_call"`
	FwknopPcapCall Summary `json:"fwknop_pcap_call"`
	FwknopUDPCall  Summary `json:"fwknop_udp_call"`
	RatioPcap      float64 `json:"fwknop_pcap_p50_over_jitgate_p50"`
	RatioUDP       float64 `json:"fwknop_udp_p50_over_jitgate_p50"`
	TargetRatio    float64 `json:"target_ratio"`
	Met            bool    `json:"met"`
	// Expiry: the first refused connection minus the deadline the request
	// asked for (3 s after the request), per trial.
	JitgateExpiryMS []float64 `json:"jitgate_first_refusal_minus_deadline_ms"`
	FwknopExpiryMS  []float64 `json:"fwknop_first_refusal_minus_deadline_ms"`
	Crashes         []Crash   `json:"crashes"`
}

// Crash is one crash trial: a 3 s grant, the daemon(s) killed with SIGKILL
// once it is open, then connections attempted until the port closes or
// peerCrashWatch past the deadline.
type Crash struct {
	System string `json:"system"`
	Killed string `json:"killed"`
	// ClosedMS is when the port closed relative to the deadline; nil if it
	// was still open peerCrashWatch after it.
	ClosedMS *float64 `json:"closed_minus_deadline_ms"`
	// AfterRestartMS, for a port still open, is how long after restarting
	// the daemon it closed.
	AfterRestartMS *float64 `json:"closed_after_restart_ms,omitempty"`
}

// TestPeers measures jitgate and fwknop side by side, in one run: the time
// from the request to an open port (fwknop in its default capture mode and
// in UDP-server mode), how precisely access ends, and what a kill -9 of the
// daemons does to an open grant.
func TestPeers(t *testing.T) {
	testenv.RequireTool(t, "fwknopd")
	testenv.RequireTool(t, "fwknop")
	testenv.RequireTool(t, "iptables")
	res := Peers{Trials: peerTrials, TargetRatio: targetPeerRatio}
	pool := clientPool()

	// jitgate, in the lab.
	l := testlab.New(t)
	l.AddClientAddrs(pool...)
	serve(t, l.ServerNS, benchPort)
	api := setupJitgate(t, l)
	ctx := context.Background()
	var reqID string
	res.Jitgate, res.JitgateCall = openTrials(t, "jitgate", l.ClientNS, pool, func(src netip.Addr) error {
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: peers"})
		reqID = req.ID
		return err
	}, func(src netip.Addr) error {
		if _, err := api.WaitRequest(ctx, reqID, "pending", 5*time.Second); err != nil {
			return err
		}
		if _, err := api.Revoke(ctx, reqID, "bench"); err != nil {
			return err
		}
		return waitClosed(l.ClientNS, src, latencyLimit)
	})
	for i := range peerExpiryTrials {
		src := pool[i]
		t0 := time.Now()
		req := jitgateGrant(t, api, src, peerGrant)
		closed, ok := watchClose(t, l.ClientNS, src, t0.Add(peerGrant), 2*time.Second)
		if !ok {
			t.Fatalf("jitgate expiry trial %d: %s still open 2 s after the deadline (request %s)", i, src, req.ID)
		}
		res.JitgateExpiryMS = append(res.JitgateExpiryMS, closed)
	}
	t.Logf("jitgate expiry, first refusal - deadline (ms): %.1f", res.JitgateExpiryMS)
	for i, kill := range []string{"agent", "server", "agent+server"} {
		src := pool[10+i]
		t0 := time.Now()
		jitgateGrant(t, api, src, peerGrant)
		if strings.Contains(kill, "agent") {
			l.Agent.Kill()
		}
		if strings.Contains(kill, "server") {
			l.Server.Kill()
		}
		c := Crash{System: "jitgate", Killed: kill}
		if closed, ok := watchClose(t, l.ClientNS, src, t0.Add(peerGrant), peerCrashWatch); ok {
			c.ClosedMS = &closed
		}
		res.Crashes = append(res.Crashes, c)
		if strings.Contains(kill, "server") {
			l.StartServer()
			api = l.APIClient()
		}
		if strings.Contains(kill, "agent") {
			l.StartAgent("")
		}
		waitAgent(t, l, api)
	}

	// fwknop, in namespaces of its own.
	fw := newFwknopLab(t, pool)
	for _, udp := range []bool{false, true} {
		fw.start(udp)
		s, c := openTrials(t, fw.mode(), fw.client, pool, func(src netip.Addr) error { return fw.knock(src, 0) }, nil)
		if udp {
			res.FwknopUDP, res.FwknopUDPCall = s, c
		} else {
			res.FwknopPcap, res.FwknopPcapCall = s, c
		}
		fw.stop()
	}
	fw.start(false)
	for i := range peerExpiryTrials {
		src := pool[200+i]
		t0 := time.Now()
		if err := fw.knock(src, peerGrant); err != nil {
			t.Fatal(err)
		}
		closed, ok := watchClose(t, fw.client, src, t0.Add(peerGrant), 3*time.Second)
		if !ok {
			t.Fatalf("fwknop expiry trial %d: %s still open 3 s after the deadline", i, src)
		}
		res.FwknopExpiryMS = append(res.FwknopExpiryMS, closed)
	}
	t.Logf("fwknop expiry, first refusal - deadline (ms): %.1f", res.FwknopExpiryMS)
	for i, udp := range []bool{false, true} {
		if udp {
			fw.stop()
			fw.start(true)
		}
		src := pool[220+i]
		t0 := time.Now()
		if err := fw.knock(src, peerGrant); err != nil {
			t.Fatal(err)
		}
		if err := waitOpen(fw.client, src, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		fw.kill()
		c := Crash{System: "fwknop", Killed: "fwknopd (" + fw.mode() + ")"}
		if closed, ok := watchClose(t, fw.client, src, t0.Add(peerGrant), peerCrashWatch); ok {
			c.ClosedMS = &closed
		} else {
			restart := time.Now()
			fw.start(udp)
			if err := waitClosed(fw.client, src, 10*time.Second); err != nil {
				t.Logf("fwknop crash trial: %v after the restart", err)
			} else {
				after := ms(time.Since(restart))
				c.AfterRestartMS = &after
			}
		}
		res.Crashes = append(res.Crashes, c)
	}
	fw.stop()
	for _, c := range res.Crashes {
		switch {
		case c.ClosedMS != nil:
			t.Logf("crash: %s, %s killed: closed %+.1f ms after the deadline", c.System, c.Killed, *c.ClosedMS)
		case c.AfterRestartMS != nil:
			t.Logf("crash: %s, %s killed: still open %s after the deadline; closed %.0f ms after the daemon restarted", c.System, c.Killed, peerCrashWatch, *c.AfterRestartMS)
		default:
			t.Logf("crash: %s, %s killed: still open %s after the deadline, and after a restart", c.System, c.Killed, peerCrashWatch)
		}
	}

	res.RatioPcap, res.RatioUDP = res.FwknopPcap.P50/res.Jitgate.P50, res.FwknopUDP.P50/res.Jitgate.P50
	res.Met = res.RatioPcap >= targetPeerRatio
	t.Logf("fwknop p50 / jitgate p50: %.1f (capture mode; target >= %.0f: %v), %.1f (UDP-server mode)", res.RatioPcap, targetPeerRatio, res.Met, res.RatioUDP)
	writeResult(t, "peers", res)
}

// openTrials runs peerWarmup+peerTrials trials, each from a fresh source of
// pool: a poller in ns starts dialling, open asks for access, and the time
// to the first connection is recorded. closeGrant (if any) ends the grant;
// without it each source is used once (pool must be large enough).
func openTrials(t *testing.T, name string, ns *testenv.Netns, pool []netip.Addr, open, closeGrant func(src netip.Addr) error) (Summary, Summary) {
	t.Helper()
	var totals, calls []time.Duration
	for i := range peerWarmup + peerTrials {
		src := pool[i%len(pool)]
		p := newPollerTo(ns, src, testlab.ServerIP, latencyLimit)
		t0 := time.Now()
		close(p.start)
		if err := open(src); err != nil {
			t.Fatalf("%s trial %d from %s: %v", name, i, src, err)
		}
		call := time.Since(t0)
		r := <-p.done
		if r.err != nil {
			t.Fatalf("%s trial %d from %s: %v", name, i, src, r.err)
		}
		if closeGrant != nil {
			if err := closeGrant(src); err != nil {
				t.Fatalf("%s trial %d: %v", name, i, err)
			}
		}
		if i >= peerWarmup {
			totals, calls = append(totals, r.at.Sub(t0)), append(calls, call)
		}
		time.Sleep(10*time.Millisecond + mrand.N(10*time.Millisecond))
	}
	s, c := summarize(totals), summarize(calls)
	t.Logf("%-22s open: %s", name, s)
	t.Logf("%-22s call: %s", name, c)
	return s, c
}

// jitgateGrant asks for d of access from src and waits until it is active.
func jitgateGrant(t *testing.T, api *client.Client, src netip.Addr, d time.Duration) wire.Request {
	t.Helper()
	ctx := context.Background()
	req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
		Source: src.String(), Duration: wire.Duration(d), Reason: "bench: peers"})
	if err != nil {
		t.Fatal(err)
	}
	if req, err = api.WaitRequest(ctx, req.ID, "pending", 5*time.Second); err != nil || req.State != "active" {
		t.Fatalf("request %s: %v %s %s; want active", req.ID, err, req.State, req.Message)
	}
	return req
}

// watchClose dials from src every 5 ms (3 ms timeout) from 1 s before
// deadline until 20 dials in a row are dropped, or until deadline+limit. It
// returns the start of the first of those dropped dials relative to
// deadline, in ms, and whether the port closed. (A single dropped dial
// followed by a success is timing noise of the poller, not the firewall.)
func watchClose(t *testing.T, ns *testenv.Netns, src netip.Addr, deadline time.Time, limit time.Duration) (float64, bool) {
	t.Helper()
	const closedAfter = 20
	var (
		firstDrop time.Time
		drops     int
	)
	time.Sleep(time.Until(deadline.Add(-time.Second)))
	err := ns.Do(func() error {
		next := time.Now()
		for next.Before(deadline.Add(limit)) && drops < closedAfter {
			time.Sleep(time.Until(next))
			at := time.Now()
			err := dialOnce(src, testlab.ServerIP, benchPort, expiryDial)
			switch {
			case isTimeout(err):
				if drops == 0 {
					firstDrop = at
				}
				drops++
			case err != nil:
				return err
			default:
				drops = 0
			}
			next = next.Add(expiryPeriod)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if drops < closedAfter {
		return 0, false
	}
	return ms(firstDrop.Sub(deadline)), true
}

// waitOpen polls until a connection from src completes.
func waitOpen(ns *testenv.Netns, src netip.Addr, limit time.Duration) error {
	return ns.Do(func() error {
		end := time.Now().Add(limit)
		for time.Now().Before(end) {
			if dialOnce(src, testlab.ServerIP, benchPort, 3*time.Millisecond) == nil {
				return nil
			}
			time.Sleep(time.Millisecond)
		}
		return fmt.Errorf("%s not open within %s", src, limit)
	})
}

// fwknopLab is a client and a server namespace, addressed like the jitgate
// lab but separate from it, with fwknopd guarding benchPort with iptables.
type fwknopLab struct {
	t              *testing.T
	client, server *testenv.Netns
	dir            string
	key, hmac      string
	udp            bool
	proc           *os.Process
	done           chan struct{}
	out            *lockedWriter
}

// lockedWriter collects a process's output for concurrent reading.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func newFwknopLab(t *testing.T, pool []netip.Addr) *fwknopLab {
	fw := &fwknopLab{t: t, client: testenv.NewNetns(t), server: testenv.NewNetns(t), dir: t.TempDir()}
	addrs := []netip.Prefix{netip.PrefixFrom(testlab.Client1, 24)}
	for _, a := range pool {
		addrs = append(addrs, netip.PrefixFrom(a, 24))
	}
	testenv.NewLink(t,
		testenv.LinkEnd{NS: fw.client, Name: "eth0", Addrs: addrs},
		testenv.LinkEnd{NS: fw.server, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(testlab.ServerIP, 24)}})
	serve(t, fw.server, benchPort)
	// fwknopd inserts its jump to FWKNOP_INPUT at the top of INPUT; the
	// port is closed by what follows.
	fw.server.Run(t, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(benchPort), "-j", "DROP")
	fw.key, fw.hmac = randomB64(32), randomB64(64)
	access := fmt.Sprintf("SOURCE ANY\nOPEN_PORTS tcp/%d\nKEY_BASE64 %s\nHMAC_KEY_BASE64 %s\nFW_ACCESS_TIMEOUT 30\n", benchPort, fw.key, fw.hmac)
	if err := os.WriteFile(filepath.Join(fw.dir, "access.conf"), []byte(access), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(fw.dir, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.kill() })
	return fw
}

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func (fw *fwknopLab) mode() string {
	if fw.udp {
		return "fwknop UDP-server mode"
	}
	return "fwknop capture mode"
}

// start runs fwknopd in the foreground in the server namespace.
func (fw *fwknopLab) start(udp bool) {
	t := fw.t
	t.Helper()
	fw.udp = udp
	conf := fmt.Sprintf("PCAP_INTF eth0\nFWKNOP_RUN_DIR %s\nENABLE_UDP_SERVER %s\n", filepath.Join(fw.dir, "run"), map[bool]string{false: "N", true: "Y"}[udp])
	confPath := filepath.Join(fw.dir, "fwknopd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := fw.server.Command(context.Background(), "fwknopd", "-f", "-c", confPath, "-a", filepath.Join(fw.dir, "access.conf"))
	fw.out = &lockedWriter{}
	out := fw.out
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fw.proc, fw.done = cmd.Process, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(fw.done)
	deadline := time.Now().Add(10 * time.Second)
	ready := func() bool {
		o := out.String()
		return strings.Contains(o, "main event loop") || strings.Contains(o, "Kicking off UDP server")
	}
	for !ready() {
		select {
		case <-fw.done:
			t.Fatalf("fwknopd exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fwknopd not ready after 10 s: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the capture or UDP socket opens just after
}

// stop ends fwknopd cleanly (SIGTERM: it flushes its rules).
func (fw *fwknopLab) stop() {
	if fw.proc == nil {
		return
	}
	fw.proc.Signal(syscall.SIGTERM)
	select {
	case <-fw.done:
	case <-time.After(5 * time.Second):
		fw.kill()
	}
	fw.proc = nil
}

// kill ends fwknopd with SIGKILL: nothing of it runs afterwards.
func (fw *fwknopLab) kill() {
	if fw.proc == nil {
		return
	}
	fw.proc.Signal(syscall.SIGKILL)
	<-fw.done
	fw.proc = nil
	os.Remove(filepath.Join(fw.dir, "run", "fwknopd.pid"))
}

// knock sends one SPA packet from the client namespace asking access for
// src; timeout 0 takes the access stanza's.
func (fw *fwknopLab) knock(src netip.Addr, timeout time.Duration) error {
	args := []string{"--no-rc-file", "--no-save-args", "-A", fmt.Sprintf("tcp/%d", benchPort), "-a", src.String(),
		"-D", testlab.ServerIP.String(), "--key-base64-rijndael", fw.key, "--key-base64-hmac", fw.hmac}
	if timeout > 0 {
		args = append(args, "-f", fmt.Sprint(int(timeout.Seconds())))
	}
	out, err := execIn(fw.client, "fwknop", args...)
	if err != nil {
		return fmt.Errorf("fwknop: %v: %s", err, out)
	}
	return nil
}
