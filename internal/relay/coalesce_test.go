package relay_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/wire"
)

// writeLog records every Write on a connection (each one is a WebSocket
// message on the real relay connection).
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

// TestRelayFramePerWrite checks that both ends of a relay connection send
// each yamux frame in one write: a data frame's header and body in two
// writes cost a second WebSocket message (header, flush, system call and,
// from the agent, a mask) for 12 bytes, which made the relay spend much of
// its CPU on framing.
func TestRelayFramePerWrite(t *testing.T) {
	port := sinkSource(t)
	ds := desired(port, "bastion")
	ds.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := net.Pipe()
	sa, ag := &writeLog{Conn: a}, &writeLog{Conn: b}
	srv := relay.NewServer()
	go srv.ServeAgent(ctx, "web-01", sa)
	go (&relay.Agent{State: func() (wire.DesiredState, bool) { return ds, true }, Log: slog.New(slog.DiscardHandler)}).ServeConn(ctx, ag)
	for !srv.Connected("web-01") {
		time.Sleep(time.Millisecond)
	}
	for _, down := range []bool{false, true} {
		st, err := srv.Open(ctx, "web-01", relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		const n = 1 << 20
		var h [9]byte
		binary.BigEndian.PutUint64(h[1:], n)
		if down {
			h[0] = 1
			st.Write(h[:])
			if _, err := io.CopyN(io.Discard, st, n); err != nil {
				t.Fatalf("reading: %v", err)
			}
		} else {
			st.Write(h[:])
			st.Write(make([]byte, n))
			if _, err := io.ReadFull(st, h[:1]); err != nil {
				t.Fatalf("waiting for the sink: %v", err)
			}
		}
		st.Close()
	}
	for _, w := range []*writeLog{sa, ag} {
		w.mu.Lock()
		for i, p := range w.writes {
			// Each write holds whole frames: a 12-byte header (type
			// 0 = data, length at 8) and, for data, its body.
			for len(p) > 0 {
				if len(p) < 12 {
					t.Fatalf("write %d: %d bytes left, not a whole yamux header", i, len(p))
				}
				body := 0
				if p[1] == 0 {
					body = int(binary.BigEndian.Uint32(p[8:12]))
				}
				if len(p) < 12+body {
					t.Fatalf("write %d: a data frame of %d bytes split from its header (%d bytes in this write)", i, body, len(p))
				}
				p = p[12+body:]
			}
		}
		w.mu.Unlock()
	}
}
