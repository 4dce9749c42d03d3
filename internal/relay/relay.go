// Package relay is jitgate's bastion relay. A target's agent keeps one
// outbound connection to the server (a WebSocket carrying a yamux session);
// for each client tunnel the server opens one stream on it, headed by a
// Header that names the session, the grant (request id and principal), the
// port and the deadline. The agent checks every stream against its own
// desired state (Authorize) before it dials anything, and ends it at the
// grant's deadline on its own clock, even when the server is gone.
//
// Threat model in one paragraph: the relay is never an open proxy. The
// server admits a client's tunnel only for a live bastion grant of that
// client's principal (checked in internal/api), and the agent, which trusts
// the server no further than its desired state, dials only 127.0.0.1:PORT
// for a port its policy names with bastion access, for a grant it holds,
// until that grant's deadline. A compromised or confused server can
// therefore reach nothing through an agent that the agent's own desired
// state does not already allow. A gateway agent dials, instead of
// 127.0.0.1, the address of the target behind it that its desired state
// names for the grant (a server that runs no agent, such as Windows RDP).
package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// Header is the first frame of a relayed stream, from the server to the
// agent.
type Header struct {
	Session   string    `json:"session"`
	RequestID string    `json:"request_id"`
	Principal string    `json:"principal"`
	Protocol  string    `json:"protocol"`
	Port      uint16    `json:"port"`
	Deadline  time.Time `json:"deadline"`
}

// reply is the agent's answer to a header: empty Error means accepted, and
// the stream carries the connection's bytes from then on.
type reply struct {
	Error string `json:"error,omitempty"`
}

// maxFrame bounds a header or reply: a peer cannot make the other side
// allocate more.
const maxFrame = 4096

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("relay frame of %d bytes exceeds %d", len(b), maxFrame)
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader, v any) error {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return fmt.Errorf("reading relay frame: %w", err)
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size > maxFrame {
		return fmt.Errorf("relay frame of %d bytes exceeds %d", size, maxFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("reading relay frame: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding relay frame: %w", err)
	}
	return nil
}

// WriteHeader sends h on a new stream.
func WriteHeader(w io.Writer, h Header) error { return writeFrame(w, h) }

// ReadHeader reads the header a stream starts with.
func ReadHeader(r io.Reader) (Header, error) {
	var h Header
	err := readFrame(r, &h)
	return h, err
}

// Refusal is a stream the agent refused; Reason says why.
type Refusal struct{ Reason string }

func (e *Refusal) Error() string { return "the target's agent refused the tunnel: " + e.Reason }

// Authorize decides, on the agent, whether to relay the stream headed h
// under desired state ds at now (the agent's clock). It returns the address
// to dial and when the stream must end: the earlier of the grant's deadline
// and the header's. A refusal is a *Refusal.
//
// The stream must name a live bastion grant of the desired state by request
// id, for the same principal, protocol and port; the port must be one the
// policy protects with bastion access. Only TCP is relayed. In host mode the
// agent dials the local service on 127.0.0.1; in gateway mode it dials the
// address of the target behind the gateway that the grant names, and only
// when the desired state protects that address and port with bastion access:
// the address always comes from the desired state, never from the header, so
// a gateway reaches nothing its policy does not name.
func Authorize(ds wire.DesiredState, h Header, now time.Time) (string, time.Time, error) {
	if h.Protocol != "tcp" {
		return "", time.Time{}, &Refusal{fmt.Sprintf("protocol %q: only tcp is relayed", h.Protocol)}
	}
	gateway := false
	switch ds.Mode {
	case "", "host":
	case "gateway":
		gateway = true
	default:
		return "", time.Time{}, &Refusal{"this agent runs in unknown mode " + ds.Mode}
	}
	// allowed reports whether the policy protects port on dest (the
	// agent's own host in host mode) with bastion access.
	allowed := func(dest string) bool {
		for _, p := range ds.Protected {
			if p.Port == h.Port && p.Protocol == h.Protocol && p.Destination == dest && (p.Access == "bastion" || p.Access == "both") {
				return true
			}
		}
		return false
	}
	refusePort := &Refusal{fmt.Sprintf("port %d/%s is not reachable through the bastion here", h.Port, h.Protocol)}
	if !gateway && !allowed("") {
		return "", time.Time{}, refusePort
	}
	found := false
	for _, g := range ds.Bastion {
		if g.RequestID != h.RequestID || g.Port != h.Port || g.Protocol != h.Protocol {
			continue
		}
		found = true
		if g.Principal != h.Principal {
			return "", time.Time{}, &Refusal{"the grant belongs to another principal"}
		}
		if !now.Before(g.ExpiresAt) {
			return "", time.Time{}, &Refusal{"the grant has expired"}
		}
		until := g.ExpiresAt
		if !h.Deadline.IsZero() && h.Deadline.Before(until) {
			until = h.Deadline
		}
		host := "127.0.0.1"
		if gateway {
			if !dialable(g.Destination) || !allowed(g.Destination) {
				continue
			}
			host = g.Destination
		}
		return net.JoinHostPort(host, strconv.Itoa(int(h.Port))), until, nil
	}
	if found {
		return "", time.Time{}, refusePort
	}
	return "", time.Time{}, &Refusal{fmt.Sprintf("no live bastion grant %q for port %d", h.RequestID, h.Port)}
}

// dialable reports whether a gateway may dial dest for the bastion: an IP
// address written plainly (a name would be resolved by whoever answers DNS,
// a zone picks an interface) that is global unicast, as the server demands
// of an address placed behind a gateway (store.checkBehindGateway). So even
// a desired state from a compromised server cannot make a gateway dial its
// own loopback services, a link-local address such as a cloud's metadata
// service (169.254.169.254), a multicast group or a host name.
func dialable(dest string) bool {
	a, err := netip.ParseAddr(dest)
	return err == nil && a.Zone() == "" && !a.Is4In6() && a.String() == dest && a.IsGlobalUnicast()
}

// Counter counts the bytes a splice moved each way.
type Counter struct {
	// In is client to target, Out target to client.
	In, Out atomic.Int64
	// last is when a byte last moved either way (Unix nanoseconds), for
	// idle timeouts.
	last atomic.Int64
}

// Touch records activity at t.
func (c *Counter) Touch(t time.Time) { c.last.Store(t.UnixNano()) }

// LastActive is when a byte last moved either way (or the last Touch).
func (c *Counter) LastActive() time.Time { return time.Unix(0, c.last.Load()) }

// Splice copies between client and target until either side ends, then
// closes both. It counts into c (may be nil).
func Splice(client, target net.Conn, c *Counter) {
	if c == nil {
		c = &Counter{}
	}
	var once sync.Once
	// Closing a yamux stream only half-closes it; a past deadline also
	// ends a read still waiting on the other half.
	closeBoth := func() { once.Do(func() { closeHard(client); closeHard(target) }) }
	done := make(chan struct{}, 2)
	go func() { copyCount(target, client, &c.In, c); closeBoth(); done <- struct{}{} }()
	go func() { copyCount(client, target, &c.Out, c); closeBoth(); done <- struct{}{} }()
	<-done
	<-done
}

func closeHard(c net.Conn) {
	c.SetDeadline(time.Unix(1, 0))
	c.Close()
}

func copyCount(dst io.Writer, src io.Reader, n *atomic.Int64, c *Counter) {
	buf := make([]byte, 32*1024)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			// Counted before the write: the peer may answer (and its
			// bytes be counted) before this write returns.
			n.Add(int64(k))
			c.Touch(time.Now())
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ErrNoAgent is returned when the target's agent holds no relay connection.
var ErrNoAgent = errors.New("the target's agent is not connected to the relay")
