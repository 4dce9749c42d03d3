package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The relay's WebSockets (a client's tunnel, an agent's relay connection)
// carry a byte stream: each Write is one binary message. Their write
// buffer decides how many system calls a message costs where the frames
// are masked (everything a client or an agent sends, by RFC 6455): a mask
// is applied in the buffer and the buffer written when full. With 4 KiB
// (the common default, and coder/websocket's fixed size) a 32 KiB message
// took eight writes; wsWriteBuffer takes one. The buffers come from a pool
// and are held only while a message is being written, so an idle tunnel
// holds none.
const wsWriteBuffer = 64 << 10

var wsWritePool = &sync.Pool{}

var upgrader = websocket.Upgrader{
	WriteBufferSize: wsWriteBuffer,
	WriteBufferPool: wsWritePool,
	// No compression: the bytes are usually encrypted (ssh, RDP's TLS)
	// and the CPU is better spent moving them.
	EnableCompression: false,
}

// IsUpgrade reports whether r asks for a WebSocket by its headers (what
// AcceptWS then upgrades, its handshake permitting): a handler that records
// something before the handshake completes checks it first, so that a
// request that is no upgrade changes nothing.
func IsUpgrade(r *http.Request) bool { return websocket.IsWebSocketUpgrade(r) }

// AcceptWS upgrades r to the WebSocket that carries a relay connection (a
// client's tunnel or an agent's relay connection) and returns it as a
// net.Conn that ends when ctx ends or it is closed. On error the upgrade
// has already been answered.
func AcceptWS(ctx context.Context, w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	c, err := upgrader.Upgrade(hijacker{w}, r, nil)
	if err != nil {
		return nil, err
	}
	return newWSConn(ctx, c), nil
}

// hijacker reaches the connection through wrappers of the ResponseWriter
// (the server's request log) that say so by an Unwrap method, as
// http.ResponseController does; the WebSocket library only asks the
// outermost one.
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// DialWS dials the relay WebSocket at url (http:// or https://, or ws://
// or wss://) with hdr, using
// the TLS settings, proxy and dialer of hc's transport when it is an
// *http.Transport, and returns it as a net.Conn that ends when ctx ends or
// it is closed. A refusal of the upgrade returns the server's response too.
func DialWS(ctx context.Context, url string, hc *http.Client, hdr http.Header) (net.Conn, *http.Response, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		Proxy:            http.ProxyFromEnvironment,
		WriteBufferSize:  wsWriteBuffer,
		WriteBufferPool:  wsWritePool,
	}
	if hc != nil {
		if t, ok := hc.Transport.(*http.Transport); ok {
			d.TLSClientConfig = t.TLSClientConfig
			d.Proxy = t.Proxy
			d.NetDialContext = t.DialContext
		}
	}
	switch {
	case strings.HasPrefix(url, "http://"):
		url = "ws://" + strings.TrimPrefix(url, "http://")
	case strings.HasPrefix(url, "https://"):
		url = "wss://" + strings.TrimPrefix(url, "https://")
	}
	c, resp, err := d.DialContext(ctx, url, hdr)
	if err != nil {
		return nil, resp, err
	}
	return newWSConn(ctx, c), resp, nil
}

// wsConn is a WebSocket as a net.Conn: each Write is a binary message, Read
// reads the messages' bytes in order. A close message from the peer
// (normal or going away) reads as io.EOF; any other end as an error.
type wsConn struct {
	c    *websocket.Conn
	r    io.Reader // the message being read
	stop func() bool
	once sync.Once
	// writeDeadline is the write deadline in Unix nanoseconds (0: none).
	writeDeadline atomic.Int64
}

func newWSConn(ctx context.Context, c *websocket.Conn) *wsConn {
	w := &wsConn{c: c}
	w.stop = context.AfterFunc(ctx, func() { w.Close() })
	return w
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			typ, r, err := w.c.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "binary messages only"), time.Now().Add(time.Second))
				return 0, errors.New("relay WebSocket: a message that is not binary")
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	// The library reads its write deadline in the writing goroutine, so
	// it is handed over here rather than in SetWriteDeadline, which may
	// run concurrently with a write.
	var dl time.Time
	if n := w.writeDeadline.Load(); n != 0 {
		dl = time.Unix(0, n)
	}
	w.c.SetWriteDeadline(dl)
	if err := w.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a normal close message (the peer reads io.EOF) and closes
// the connection. It does not wait for the peer's answer, and gives up on
// the close message after closeWait when the peer does not read (or at
// once after a write failed or its deadline passed: see SetDeadline).
func (w *wsConn) Close() error {
	err := net.ErrClosed
	w.once.Do(func() {
		w.stop()
		w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeWait))
		err = w.c.Close()
	})
	return err
}

const closeWait = 250 * time.Millisecond

func (w *wsConn) LocalAddr() net.Addr               { return w.c.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr              { return w.c.RemoteAddr() }
func (w *wsConn) SetReadDeadline(t time.Time) error { return w.c.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of later writes and also of a write
// already waiting on the socket (the WebSocket library applies its own only
// when it writes a frame): a past deadline ends a blocked write at once, as
// Splice's hard close needs. It is safe to call during a write.
func (w *wsConn) SetWriteDeadline(t time.Time) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	w.writeDeadline.Store(n)
	return w.c.NetConn().SetWriteDeadline(t)
}

func (w *wsConn) SetDeadline(t time.Time) error {
	w.c.SetReadDeadline(t)
	return w.SetWriteDeadline(t)
}
