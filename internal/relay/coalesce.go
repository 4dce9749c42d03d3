package relay

import (
	"encoding/binary"
	"net"
)

// coalesceConn sends each yamux data frame as one write: yamux's send loop
// writes a frame's 12-byte header and its body in two calls, and on a
// WebSocket every write is a message of its own (a frame header, a flush,
// a system call, a read on the other side, and a mask when the agent
// writes). A data header that announces a body is held until the body
// comes and both go out together; everything else passes through. Only
// yamux's send loop writes to the connection, one frame at a time.
type coalesceConn struct {
	net.Conn
	hdr     [yamuxHeader]byte
	pending bool
	buf     []byte
}

const (
	yamuxHeader = 12
	yamuxData   = 0 // yamux's typeData
)

func (c *coalesceConn) Write(p []byte) (int, error) {
	if c.pending {
		c.pending = false
		if int(binary.BigEndian.Uint32(c.hdr[8:])) == len(p) {
			c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
			if _, err := c.Conn.Write(c.buf); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		// Not the body it announced: send both as they came.
		if _, err := c.Conn.Write(c.hdr[:]); err != nil {
			return 0, err
		}
	} else if len(p) == yamuxHeader && p[1] == yamuxData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}
