package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/firewall"
)

// nfnetlink_log, which x/sys/unix does not define (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaPacketHdr = 1
	nfulaPayload   = 9

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgQThresh = 5

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2

	// copyRange is how much of each packet the kernel copies: enough for
	// an IPv6 header and the transport ports.
	copyRange = 64
	// maxPending bounds the samples held between two reads.
	maxPending = 4096
)

// Sampler reads the blocked packets the gate samples to LogGroup (the rules'
// `limit rate ... log group`), over a NETLINK_NETFILTER socket bound to the
// group. It needs CAP_NET_ADMIN. A Sampler is safe for concurrent use.
type Sampler struct {
	conn *netlink.Conn

	mu      sync.Mutex
	pending []firewall.Sample
	lost    int
}

var _ interface{ Samples() []firewall.Sample } = (*Sampler)(nil)

// NewSampler binds LogGroup in the caller's network namespace (or the one
// WithNetNSFd names). Only one socket per namespace can bind the group.
func NewSampler(opts ...Option) (*Sampler, error) {
	var b Backend
	for _, o := range opts {
		o(&b)
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: b.netnsFD})
	if err != nil {
		return nil, fmt.Errorf("opening nflog socket: %w", explain(err))
	}
	s := &Sampler{conn: conn}
	if err := s.config(nfulnlCfgCmdBind); err != nil {
		conn.Close()
		return nil, fmt.Errorf("binding nflog group %d: %w", LogGroup, explain(err))
	}
	return s, nil
}

func (s *Sampler) config(cmd byte) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(nfulaCfgCmd, []byte{cmd})
	if cmd == nfulnlCfgCmdBind {
		mode := make([]byte, 6) // struct nfulnl_msg_config_mode, packed
		binary.BigEndian.PutUint32(mode, copyRange)
		mode[4] = nfulnlCopyPacket
		ae.Bytes(nfulaCfgMode, mode)
		ae.Uint32(nfulaCfgQThresh, 1) // deliver each packet at once
	}
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], LogGroup)
	_, err = s.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	return err
}

// Run reads samples until ctx ends or Close, and returns nil then.
func (s *Sampler) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		msgs, err := s.conn.Receive()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
				return nil
			}
			var oe *netlink.OpError
			if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS) {
				s.mu.Lock()
				s.lost++ // the kernel dropped messages: we were too slow
				s.mu.Unlock()
				continue
			}
			return fmt.Errorf("reading nflog group %d: %w", LogGroup, err)
		}
		now := time.Now()
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			if smp, ok := parseSample(m.Data[4:], now); ok {
				s.add(smp)
			}
		}
	}
}

func (s *Sampler) add(smp firewall.Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) >= maxPending {
		s.lost++
		return
	}
	s.pending = append(s.pending, smp)
}

// Samples drains the samples read since the last call.
func (s *Sampler) Samples() []firewall.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.pending
	s.pending = nil
	return out
}

// Close unbinds the group and closes the socket; Run returns.
func (s *Sampler) Close() error {
	_ = s.config(nfulnlCfgCmdUnbind) // best effort: closing the socket unbinds too
	return s.conn.Close()
}

// parseSample reads the attributes of one NFULNL_MSG_PACKET.
func parseSample(b []byte, at time.Time) (firewall.Sample, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return firewall.Sample{}, false
	}
	var payload []byte
	for ad.Next() {
		if ad.Type() == nfulaPayload {
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil || len(payload) == 0 {
		return firewall.Sample{}, false
	}
	return parsePacket(payload, at)
}

// parsePacket reads source, destination, protocol and destination port from
// an IP packet (extension headers of IPv6 are not followed).
func parsePacket(p []byte, at time.Time) (firewall.Sample, bool) {
	var (
		src, dst netip.Addr
		proto    byte
		l4       []byte
	)
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || len(p) < ihl {
			return firewall.Sample{}, false
		}
		proto = p[9]
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		l4 = p[ihl:]
	case len(p) >= 40 && p[0]>>4 == 6:
		proto = p[6]
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		l4 = p[40:]
	default:
		return firewall.Sample{}, false
	}
	if (proto != byte(firewall.TCP) && proto != byte(firewall.UDP)) || len(l4) < 4 {
		return firewall.Sample{}, false
	}
	return firewall.Sample{Source: src, Dest: dst, Proto: firewall.Protocol(proto), Port: binary.BigEndian.Uint16(l4[2:4]), At: at}, true
}
