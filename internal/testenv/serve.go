package testenv

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
)

// Serve accepts connections on ln until ln is closed, which it is when tb
// ends, and hands each to handle on a goroutine of its own.
func Serve(tb testing.TB, ln net.Listener, handle func(net.Conn)) {
	tb.Helper()
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// Echo starts a TCP service on 127.0.0.1 that sends back every byte it
// receives, until tb ends, and returns its port.
func Echo(tb testing.TB) uint16 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	Serve(tb, ln, func(c net.Conn) { io.Copy(c, c); c.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// DialTunnel opens a bastion tunnel as c to port of target, trying again
// every 10 ms for up to timeout while the server answers 503 (the target's
// relay agent is not connected yet); any other answer is returned at once.
func DialTunnel(ctx context.Context, c *client.Client, target string, port uint16, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := c.Tunnel(ctx, target, port)
		if client.StatusOf(err) != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
