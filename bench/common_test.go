//go:build bench

// Package bench measures jitgate in a two-namespace lab (internal/testlab):
// the time from the API call to the first connection through the grant, the
// new-connection rate with 0 and 100,000 grants, and expiry precision with
// every jitgate process killed. Each test writes its numbers as JSON into
// bench/results/ and logs a summary. Run it with bench/run.sh, as root; the
// write-up is docs/benchmarks.md.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

func TestMain(m *testing.M) {
	if os.Getenv(pollerChildEnv) != "" {
		pollerChild()
		return
	}
	if os.Getenv("BENCH_FLEET_CHILD") != "" || os.Getenv("BENCH_LOAD_SIM_CHILD") != "" {
		// The fleet process of TestFleet, the simulated agents of
		// TestControlPlaneLoad: no lab, no binary.
		os.Exit(m.Run())
	}
	code := testlab.Run(m)
	testenv.StopPostgres() // started by the replica benchmarks, if any ran
	os.Exit(code)
}

// benchPort is the protected port; a listener that accepts and closes
// stands for the target service.
const benchPort = 2222

const target = "bench-01"

// writeResult writes v as indented JSON to results/<name>.json.
func writeResult(tb testing.TB, name string, v any) {
	tb.Helper()
	if err := os.MkdirAll("results", 0o755); err != nil {
		tb.Fatal(err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join("results", name+".json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("wrote %s", p)
}

// Summary is a distribution of durations, in milliseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	// Nearest-rank percentiles.
	pct := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return Summary{N: len(s), Min: ms(s[0]), P50: pct(50), P90: pct(90), P99: pct(99), Max: ms(s[len(s)-1]),
		Mean: ms(sum / time.Duration(len(s)))}
}

func (s Summary) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms (min %.2fms)", s.N, s.P50, s.P90, s.P99, s.Max, s.Min)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// serve accepts connections on port in ns and closes them at once, until
// the test ends.
func serve(tb testing.TB, ns *testenv.Netns, port uint16) {
	tb.Helper()
	ln, err := ns.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	for range 2 {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				c.Close()
			}
		}()
	}
}

// dialOnce tries one TCP connection from src to dst:port with the given
// timeout. It must run on a thread inside the client namespace (in Do).
func dialOnce(src, dst netip.Addr, port uint16, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	c, err := d.Dial("tcp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		return err
	}
	return c.Close()
}

// isTimeout reports whether err is a dial timeout: the SYN was dropped.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// poller dials from src in the client namespace in a tight loop with a
// 1 ms timeout, from when start closes until one connection completes or
// limit passes, and sends the instant that connection completed.
type poller struct {
	start chan struct{}
	done  chan pollResult
	// kick, when set, starts the poller instead of closing start (the
	// poller's own process: newProcPoller).
	kick func()
}

type pollResult struct {
	at       time.Time
	attempts int
	err      error
}

const pollTimeout = time.Millisecond

func newPoller(ns *testenv.Netns, src netip.Addr, limit time.Duration) *poller {
	return newPollerTo(ns, src, testlab.ServerIP, limit)
}

// newPollerTo is newPoller towards dst.
func newPollerTo(ns *testenv.Netns, src, dst netip.Addr, limit time.Duration) *poller {
	p := &poller{start: make(chan struct{}), done: make(chan pollResult, 1)}
	ready := make(chan struct{})
	go func() {
		var r pollResult
		r.err = ns.Do(func() error {
			close(ready)
			<-p.start
			end := time.Now().Add(limit)
			for time.Now().Before(end) {
				r.attempts++
				err := dialOnce(src, dst, benchPort, pollTimeout)
				if err == nil {
					r.at = time.Now()
					return nil
				}
				if !isTimeout(err) {
					return err
				}
			}
			return fmt.Errorf("no connection from %s within %s (%d attempts)", src, limit, r.attempts)
		})
		p.done <- r
	}()
	<-ready
	return p
}

// finePollInterval is how often the fine poller starts a connection
// attempt, and finePollLife how long each waits for its answer before it is
// closed (a dropped SYN is retransmitted only after a second, so an attempt
// whose SYN was dropped never completes within a trial).
const (
	finePollInterval = 100 * time.Microsecond
	finePollLife     = 2 * time.Millisecond
)

// newFinePoller is newPoller with a resolution of finePollInterval: from
// when start closes it starts a non-blocking connect from src every
// finePollInterval, each on its own socket (closed after finePollLife), and
// sends the instant the first of them completes. The measured quantity is
// the same as newPoller's (the first TCP connection from src that
// completes); what changes is how late it is seen: the first SYN sent after
// the grant lands leaves at most finePollInterval later, where newPoller's
// next SYN waits for the attempt in flight to time out (up to pollTimeout).
// The price is CPU: about 10,000 connect calls per second while a trial
// runs (attempts in pollResult).
func newFinePoller(ns *testenv.Netns, src netip.Addr, limit time.Duration) *poller {
	p := &poller{start: make(chan struct{}), done: make(chan pollResult, 1)}
	ready := make(chan struct{})
	go func() {
		var r pollResult
		r.err = ns.Do(func() error {
			close(ready)
			<-p.start
			at, n, err := finePoll(src, testlab.ServerIP, benchPort, limit)
			r.at, r.attempts = at, n
			return err
		})
		p.done <- r
	}()
	<-ready
	return p
}

// finePoll runs the fine poller on the calling thread (in the client
// namespace); it returns when the first attempt completes.
func finePoll(src, dst netip.Addr, port uint16, limit time.Duration) (time.Time, int, error) {
	type attempt struct {
		fd      int
		started time.Time
	}
	var live []attempt
	defer func() {
		for _, a := range live {
			unix.Close(a.fd)
		}
	}()
	local := &unix.SockaddrInet4{Addr: src.As4()}
	remote := &unix.SockaddrInet4{Addr: dst.As4(), Port: int(port)}
	start := time.Now()
	end := start.Add(limit)
	next := start
	attempts := 0
	var fds []unix.PollFd
	for {
		now := time.Now()
		if !now.Before(end) {
			return time.Time{}, attempts, fmt.Errorf("no connection from %s within %s (%d attempts)", src, limit, attempts)
		}
		if !now.Before(next) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return time.Time{}, attempts, fmt.Errorf("socket: %w", err)
			}
			if err := unix.Bind(fd, local); err != nil {
				unix.Close(fd)
				return time.Time{}, attempts, fmt.Errorf("bind %s: %w", src, err)
			}
			attempts++
			err = unix.Connect(fd, remote)
			if err == nil {
				unix.Close(fd)
				return time.Now(), attempts, nil
			}
			if err != unix.EINPROGRESS {
				unix.Close(fd)
				return time.Time{}, attempts, fmt.Errorf("connect from %s: %w", src, err)
			}
			live = append(live, attempt{fd, now})
			// Never more than one attempt per interval, even after a stall.
			if next = next.Add(finePollInterval); next.Before(now) {
				next = now.Add(finePollInterval)
			}
		}
		// Attempts whose SYN was dropped: their retransmission would come
		// a second later; close them.
		kept := live[:0]
		for _, a := range live {
			if now.Sub(a.started) >= finePollLife {
				unix.Close(a.fd)
				continue
			}
			kept = append(kept, a)
		}
		live = kept
		fds = fds[:0]
		for _, a := range live {
			fds = append(fds, unix.PollFd{Fd: int32(a.fd), Events: unix.POLLOUT})
		}
		ts := unix.NsecToTimespec(max(int64(next.Sub(time.Now())), 0))
		n, err := unix.Ppoll(fds, &ts, nil)
		if err != nil && err != unix.EINTR {
			return time.Time{}, attempts, fmt.Errorf("ppoll: %w", err)
		}
		if n <= 0 {
			continue
		}
		at := time.Now()
		for _, f := range fds {
			if f.Revents == 0 {
				continue
			}
			soerr, err := unix.GetsockoptInt(int(f.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return time.Time{}, attempts, fmt.Errorf("getsockopt: %w", err)
			}
			if soerr == 0 {
				return at, attempts, nil
			}
			return time.Time{}, attempts, fmt.Errorf("connect from %s: %w", src, unix.Errno(soerr))
		}
	}
}

// waitClosed polls until a connection from src is dropped (a dial timeout).
func waitClosed(ns *testenv.Netns, src netip.Addr, limit time.Duration) error {
	return ns.Do(func() error {
		end := time.Now().Add(limit)
		for time.Now().Before(end) {
			err := dialOnce(src, testlab.ServerIP, benchPort, 3*time.Millisecond)
			if isTimeout(err) {
				return nil
			}
			if err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		return fmt.Errorf("%s still connects %s later", src, limit)
	})
}

// execIn runs a program on a thread inside ns: the child inherits the
// thread's network namespace, so no `ip netns exec` wrapper adds its cost.
func execIn(ns *testenv.Netns, name string, args ...string) ([]byte, error) {
	var out []byte
	err := ns.Do(func() (err error) {
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	return out, err
}

// setupJitgate starts the server and the agent, enrolls the target and
// protects benchPort with a policy; it returns an admin API client that
// calls from the client namespace.
func setupJitgate(tb testing.TB, l *testlab.Lab, serverFlags ...string) *client.Client {
	tb.Helper()
	l.StartServer(serverFlags...)
	api := l.APIClient()
	ctx := context.Background()
	created, err := api.CreateTarget(ctx, wire.TargetCreate{Name: target})
	if err != nil {
		tb.Fatal(err)
	}
	l.StartAgent(created.EnrollToken)
	waitAgent(tb, l, api)
	_, err = api.SetPolicy(ctx, target, wire.Policy{Rules: []wire.PortRule{
		{Port: benchPort, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)}}})
	if err != nil {
		tb.Fatal(err)
	}
	waitAgent(tb, l, api)
	return api
}

// waitAgent waits until the agent is connected and applied the target's
// latest revision.
func waitAgent(tb testing.TB, l *testlab.Lab, api *client.Client) {
	tb.Helper()
	l.Eventually("agent connected and up to date", 10*time.Second, func() bool {
		tg, err := api.Target(context.Background(), target)
		return err == nil && tg.Agent.State == "connected" && tg.Agent.AppliedRevision == tg.Agent.Revision
	})
}
