//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
)

// pollerChildEnv makes the test binary the fine poller's own process
// (pollerChild) instead of running tests.
const pollerChildEnv = "BENCH_POLLER_CHILD"

// The fine poller run inside the test process (newFinePoller) slows the
// very call it times: its goroutine is locked to a thread of its own that
// wakes every 0.1 ms, and each wake-up, block and hand-back of that thread
// goes through the Go scheduler the API client shares (P hand-offs,
// spinning threads). In one run of alternating trials the API call took
// 4.55 ms (p50) with it, 3.75 ms with no poller at all. The process poller
// runs its loop in a process of its own in the client namespace, which the
// test process only writes a line to and reads a line from, and its loop
// (synPoll) sends one SYN per attempt through a raw socket instead of
// opening a socket per attempt: what remains of the instrument is that CPU
// on the shared cores, and TestGrantLatency measures it (the call in
// trials with no poller).

// procPoller is the fine poller's process, started once per lab.
type procPoller struct {
	in  io.WriteCloser
	out *bufio.Reader
}

// startProcPoller starts the fine poller's process in ns; it ends with
// the test.
func startProcPoller(tb testing.TB, ns *testenv.Netns) *procPoller {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, exe)
	cmd.Env = append(os.Environ(), pollerChildEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting the poller's process: %v", err)
	}
	tb.Cleanup(func() {
		in.Close()
		cancel()
		cmd.Wait()
	})
	return &procPoller{in: in, out: bufio.NewReader(out)}
}

// instrument is newFinePoller's counterpart, in the poller's process (same
// interval, one SYN per attempt: synPoll). Its
// start signal is sent by kick (a pipe write), before the clock starts.
func (pp *procPoller) instrument(_ *testenv.Netns, src netip.Addr, limit time.Duration) *poller {
	p := &poller{start: make(chan struct{}), done: make(chan pollResult, 1)}
	p.kick = func() {
		if _, err := fmt.Fprintf(pp.in, "%s %d\n", src, limit); err != nil {
			p.done <- pollResult{err: fmt.Errorf("asking the poller's process: %w", err)}
			return
		}
		go func() {
			p.done <- pp.read()
		}()
	}
	return p
}

// read takes the poller process's answer: "ok <unix ns> <attempts>" or
// "err <message>".
func (pp *procPoller) read() pollResult {
	line, err := pp.out.ReadString('\n')
	if err != nil {
		return pollResult{err: fmt.Errorf("reading the poller's process: %w", err)}
	}
	f := strings.Fields(line)
	if len(f) == 3 && f[0] == "ok" {
		ns, err1 := strconv.ParseInt(f[1], 10, 64)
		n, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil {
			return pollResult{at: time.Unix(0, ns), attempts: n}
		}
	}
	return pollResult{err: fmt.Errorf("the poller's process: %s", strings.TrimSpace(line))}
}

// pollerChild is the poller's process: for each line "<src> <limit ns>"
// on stdin it runs synPoll from src and answers on stdout. It runs in the
// client namespace (started through `ip netns exec`), on one locked thread.
func pollerChild() {
	runtime.LockOSThread()
	in := bufio.NewReader(os.Stdin)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			os.Exit(0)
		}
		var (
			src   string
			limit int64
		)
		if _, err := fmt.Sscan(line, &src, &limit); err != nil {
			fmt.Printf("err bad request %q\n", strings.TrimSpace(line))
			continue
		}
		addr, err := netip.ParseAddr(src)
		if err != nil {
			fmt.Printf("err %v\n", err)
			continue
		}
		at, n, err := synPoll(addr, testlab.ServerIP, benchPort, time.Duration(limit))
		if err != nil {
			fmt.Printf("err %v\n", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Printf("ok %d %d\n", at.UnixNano(), n)
	}
}

// synPoll is finePoll without its sockets: every finePollInterval it sends
// a TCP SYN from src (a fresh source port each time) to dst:port through
// one raw socket, and returns the instant the first SYN-ACK for one of
// them arrives, which is when a connect from src would complete (the
// kernel then answers the SYN-ACK with a reset: no socket holds the port).
// A connect attempt costs a socket, a bind, a connect and a close; a SYN
// here one sendto, so the instrument takes less of the cores it shares
// with what it measures.
func synPoll(src, dst netip.Addr, port uint16, limit time.Duration) (time.Time, int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		return time.Time{}, 0, fmt.Errorf("bind %s: %w", src, err)
	}
	remote := &unix.SockaddrInet4{Addr: dst.As4()}
	base := uint16(20000 + rand.N(30000))
	seq := rand.Uint32()
	start := time.Now()
	end, next := start.Add(limit), start
	attempts := 0
	pkt := make([]byte, 20)
	buf := make([]byte, 1500)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		now := time.Now()
		if !now.Before(end) {
			return time.Time{}, attempts, fmt.Errorf("no SYN-ACK to %s within %s (%d SYNs)", src, limit, attempts)
		}
		if !now.Before(next) {
			synSegment(pkt, src, dst, base+uint16(attempts), port, seq)
			if err := unix.Sendto(fd, pkt, 0, remote); err != nil {
				return time.Time{}, attempts, fmt.Errorf("sending a SYN from %s: %w", src, err)
			}
			attempts++
			if next = next.Add(finePollInterval); next.Before(now) {
				next = now.Add(finePollInterval)
			}
		}
		ts := unix.NsecToTimespec(max(int64(next.Sub(time.Now())), 0))
		if _, err := unix.Ppoll(fds, &ts, nil); err != nil && err != unix.EINTR {
			return time.Time{}, attempts, fmt.Errorf("ppoll: %w", err)
		}
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break // EAGAIN: nothing more
			}
			at := time.Now()
			p := buf[:n]
			if n < 20 || p[9] != unix.IPPROTO_TCP {
				continue
			}
			ihl := int(p[0]&0x0f) * 4
			if n < ihl+20 || netip.AddrFrom4([4]byte(p[12:16])) != dst || netip.AddrFrom4([4]byte(p[16:20])) != src {
				continue
			}
			tcp := p[ihl:]
			sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
			const syn, ack = 0x02, 0x10
			if sport == port && dport-base < uint16(attempts) && tcp[13]&(syn|ack) == syn|ack {
				return at, attempts, nil
			}
		}
	}
}

// synSegment writes a 20-byte TCP SYN from src:sport to dst:dport, with
// its checksum, into b.
func synSegment(b []byte, src, dst netip.Addr, sport, dport uint16, seq uint32) {
	clear(b)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint32(b[4:8], seq)
	b[12] = 5 << 4 // header length: 5 words
	b[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(b[14:16], 65535)
	s, d := src.As4(), dst.As4()
	var sum uint32
	for _, w := range [][]byte{s[:], d[:], {0, unix.IPPROTO_TCP, 0, byte(len(b))}, b} {
		for i := 0; i+1 < len(w); i += 2 {
			sum += uint32(w[i])<<8 | uint32(w[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[16:18], ^uint16(sum))
}
