//go:build bench

package bench

import (
	"bufio"
	"bytes"
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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
)

// pollerChildEnv makes the test binary the fine poller's own process
// (pollerChild) instead of running tests; pollerEventsEnv, the path of the
// server's network namespace, makes it wait for the kernel's notification
// before its first SYN (eventPoll).
const (
	pollerChildEnv  = "BENCH_POLLER_CHILD"
	pollerEventsEnv = "BENCH_POLLER_EVENTS_NETNS"
)

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
func startProcPoller(tb testing.TB, ns *testenv.Netns, events *testenv.Netns) *procPoller {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, exe)
	cmd.Env = append(os.Environ(), pollerChildEnv+"=1")
	if events != nil {
		cmd.Env = append(cmd.Env, pollerEventsEnv+"=/run/netns/"+events.Name())
	}
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
	nl := -1
	if path := os.Getenv(pollerEventsEnv); path != "" {
		var err error
		if nl, err = nftablesEvents(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
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
		var (
			at time.Time
			n  int
		)
		if nl >= 0 {
			// Not drained first: this trial's notification may already be
			// there when this process wakes late. Another trial's is for
			// another source (each source's last notification was read
			// by the event trial that followed it, and a source comes
			// back every 240 trials).
			at, n, err = eventPoll(nl, addr, testlab.ServerIP, benchPort, time.Duration(limit))
		} else {
			at, n, err = synPoll(addr, testlab.ServerIP, benchPort, time.Duration(limit))
		}
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

// eventPoll waits, without waking, for the kernel's notification that a
// set element holding src was added (nl: a netlink socket subscribed to the
// nftables group in the server namespace), then sends SYNs from src every
// finePollInterval until the first SYN-ACK, whose instant it returns. The
// open it reports is never early: a connection from src completes from the
// kernel's commit on, and the SYN leaves after the notification reached
// this process. A notification lost to a full socket buffer (ENOBUFS) turns
// it into synPoll's loop from then on.
func eventPoll(nl int, src, dst netip.Addr, port uint16, limit time.Duration) (time.Time, int, error) {
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
	key := src.As4()
	end := time.Now().Add(limit)
	var next time.Time // zero until the notification: no SYN before it
	attempts := 0
	pkt := make([]byte, 20)
	buf := make([]byte, 1<<16)
	fds := []unix.PollFd{{Fd: int32(nl), Events: unix.POLLIN}, {Fd: int32(fd), Events: unix.POLLIN}}
	for {
		now := time.Now()
		if !now.Before(end) {
			return time.Time{}, attempts, fmt.Errorf("no SYN-ACK to %s within %s (%d SYNs)", src, limit, attempts)
		}
		if !next.IsZero() && !now.Before(next) {
			synSegment(pkt, src, dst, base+uint16(attempts), port, seq)
			if err := unix.Sendto(fd, pkt, 0, remote); err != nil {
				return time.Time{}, attempts, fmt.Errorf("sending a SYN from %s: %w", src, err)
			}
			attempts++
			if next = next.Add(finePollInterval); next.Before(now) {
				next = now.Add(finePollInterval)
			}
		}
		wait := end.Sub(now)
		if !next.IsZero() {
			wait = max(next.Sub(time.Now()), 0)
		}
		ts := unix.NsecToTimespec(int64(wait))
		if _, err := unix.Ppoll(fds, &ts, nil); err != nil && err != unix.EINTR {
			return time.Time{}, attempts, fmt.Errorf("ppoll: %w", err)
		}
		for next.IsZero() {
			n, _, err := unix.Recvfrom(nl, buf, unix.MSG_DONTWAIT)
			if err == unix.ENOBUFS {
				next = time.Now() // a notification may be lost: poll
				break
			}
			if err != nil {
				break // EAGAIN
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				continue
			}
			for _, m := range msgs {
				if m.Header.Type == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM && bytes.Contains(m.Data, key[:]) {
					next = time.Now()
				}
			}
		}
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break // EAGAIN: nothing more
			}
			at := time.Now()
			if synAckFor(buf[:n], src, dst, port, base, attempts) {
				return at, attempts, nil
			}
		}
	}
}

// synAckFor reports whether IPv4 packet p is dst:port's SYN-ACK to one of
// the SYNs sent from src (source ports base to base+attempts-1).
func synAckFor(p []byte, src, dst netip.Addr, port, base uint16, attempts int) bool {
	if len(p) < 20 || p[9] != unix.IPPROTO_TCP {
		return false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+20 || netip.AddrFrom4([4]byte(p[12:16])) != dst || netip.AddrFrom4([4]byte(p[16:20])) != src {
		return false
	}
	tcp := p[ihl:]
	sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
	const syn, ack = 0x02, 0x10
	return sport == port && dport-base < uint16(attempts) && tcp[13]&(syn|ack) == syn|ack
}

// nftablesEvents opens a netlink socket in the network namespace at path,
// subscribed to the nftables notifications, from the calling (locked)
// thread, which it returns to its namespace.
func nftablesEvents(path string) (int, error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(orig)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("entering %s: %w", path, err)
	}
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err == nil {
		err = unix.Bind(nl, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)})
		if err == nil {
			err = unix.SetsockoptInt(nl, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
		}
	}
	if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
		// This thread is in the wrong namespace for the SYNs: stop.
		panic(fmt.Sprintf("returning to the client namespace: %v", serr))
	}
	if err != nil {
		return -1, fmt.Errorf("nftables notifications in %s: %w", path, err)
	}
	return nl, nil
}
