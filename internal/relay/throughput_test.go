package relay_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// BenchmarkTunnel pushes bytes through the whole relay path over loopback,
// as the bastion carries them: a client's WebSocket to the server
// (relay.DialWS, relay.AcceptWS), the server's splice onto a stream of the
// agent's relay connection (itself a WebSocket the agent dialled), the
// agent's splice to a local TCP service. "up" sends from the client to the
// service (iperf3's default direction), "down" the other way. Besides MB/s
// it reports MB per CPU-second of the whole process (client, server, agent
// and service together), which is what the machine's other load does not
// distort, and allocations per 64 KiB chunk.
func BenchmarkTunnel(b *testing.B) {
	for _, dir := range []string{"up", "down"} {
		b.Run(dir, func(b *testing.B) {
			const chunk = 64 << 10
			port := sinkSource(b)
			ds := desired(port, "bastion")
			ds.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
			url := relayHTTP(b, func() (wire.DesiredState, bool) { return ds, true }, port)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			conn, _, err := relay.DialWS(ctx, url+"/tunnel", nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, chunk)
			var n [9]byte
			if dir == "down" {
				n[0] = 1
			}
			binary.BigEndian.PutUint64(n[1:], uint64(b.N)*chunk)
			b.SetBytes(chunk)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			if _, err := conn.Write(n[:]); err != nil {
				b.Fatal(err)
			}
			if dir == "up" {
				for range b.N {
					if _, err := conn.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := io.ReadFull(conn, buf[:1]); err != nil {
					b.Fatal(err)
				}
			} else if _, err := io.CopyBuffer(io.Discard, io.LimitReader(conn, int64(b.N)*chunk), buf); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if s := (cpuTime() - cpu0).Seconds(); s > 0 {
				b.ReportMetric(float64(b.N)*chunk/1e6/s, "MB/cpu-s")
			}
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sinkSource listens on loopback: each connection names a direction and a
// count (9 bytes); "up" (0) reads that many bytes and answers one byte,
// "down" (1) writes that many.
func sinkSource(tb testing.TB) uint16 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	testenv.Serve(tb, ln, func(c net.Conn) {
		defer c.Close()
		var h [9]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(h[1:]))
		buf := make([]byte, 256<<10)
		if h[0] == 0 {
			io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
			c.Write([]byte{1})
			return
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// relayHTTP serves the relay over HTTP on loopback as internal/api does,
// without the authorization: /agent takes the agent's relay connection,
// /tunnel opens a stream to port and splices the client onto it. It starts
// an agent that dials /agent and returns the ws:// base URL once the agent
// is connected.
func relayHTTP(tb testing.TB, state func() (wire.DesiredState, bool), port uint16) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := relay.NewServer()
	mux := http.NewServeMux()
	mux.HandleFunc("/agent", func(w http.ResponseWriter, r *http.Request) {
		conn, err := relay.AcceptWS(ctx, w, r)
		if err != nil {
			return
		}
		srv.ServeAgent(ctx, "web-01", conn)
	})
	mux.HandleFunc("/tunnel", func(w http.ResponseWriter, r *http.Request) {
		st, err := srv.Open(r.Context(), "web-01", relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, err := relay.AcceptWS(ctx, w, r)
		if err != nil {
			st.Close()
			return
		}
		relay.Splice(conn, st, nil)
	})
	hs := httptest.NewServer(mux)
	tb.Cleanup(func() { cancel(); srv.Close(); hs.Close() })
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	ag := &relay.Agent{State: state, Log: slog.New(slog.DiscardHandler)}
	conn, _, err := relay.DialWS(ctx, url+"/agent", nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	go ag.ServeConn(ctx, conn)
	for deadline := time.Now().Add(5 * time.Second); !srv.Connected("web-01"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("the agent never connected")
		}
	}
	return url
}

// BenchmarkTCPFloor is what BenchmarkTunnel's "up" is measured against: the
// same bytes to the same service directly ("direct", iperf3's direct path),
// and through three plain TCP proxies that copy with io.Copy, which splices
// in the kernel ("3hops", the least three user-space hops can cost).
func BenchmarkTCPFloor(b *testing.B) {
	for _, hops := range []int{0, 3} {
		name := "direct"
		if hops > 0 {
			name = strconv.Itoa(hops) + "hops"
		}
		b.Run(name, func(b *testing.B) {
			const chunk = 64 << 10
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(sinkSource(b))))
			for range hops {
				addr = tcpProxy(b, addr)
			}
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, chunk)
			var n [9]byte
			binary.BigEndian.PutUint64(n[1:], uint64(b.N)*chunk)
			b.SetBytes(chunk)
			cpu0 := cpuTime()
			b.ResetTimer()
			conn.Write(n[:])
			for range b.N {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := io.ReadFull(conn, buf[:1]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)*chunk/1e6/(cpuTime()-cpu0).Seconds(), "MB/cpu-s")
		})
	}
}

func tcpProxy(tb testing.TB, to string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	testenv.Serve(tb, ln, func(c net.Conn) {
		t, err := net.Dial("tcp", to)
		if err != nil {
			c.Close()
			return
		}
		go func() { io.Copy(t, c); t.(*net.TCPConn).CloseWrite() }()
		io.Copy(c, t)
		c.Close()
	})
	return ln.Addr().String()
}
