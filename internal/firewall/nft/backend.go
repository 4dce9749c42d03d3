// Package nft enforces a firewall.Ruleset with nftables, over netlink, from
// one long-lived connection. It owns exactly one table, inet jitgate, and
// never reads-to-modify or deletes anything outside it. See
// internal/firewall/README.md for the hook, priority, sets and timeouts.
package nft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/firewall"
)

var _ firewall.Backend = (*Backend)(nil)

// errClosed is returned by every method called after Close.
var errClosed = errors.New("nft backend is closed")

// socketBuffer is the send and receive buffer asked for the netlink socket.
// One Apply is one netlink message batch, which is one transaction only
// when sent in one sendmsg: the kernel refuses a batch larger than the send
// buffer (the default, ~200 KiB, holds only ~3,000 IPv6 elements; 32 MiB
// refused a million). The kernel doubles the value and allocates only what
// a batch needs: 256 MiB lets one transaction carry ~2,000,000 elements.
const socketBuffer = 256 << 20

// Option configures a Backend.
type Option func(*Backend)

// WithNetNSFd makes the backend program the network namespace that fd refers
// to instead of the caller's. The caller keeps ownership of fd and must keep
// it open as long as the backend is used.
func WithNetNSFd(fd int) Option { return func(b *Backend) { b.netnsFD = fd } }

// Backend programs table inet jitgate through netlink. It is safe for
// concurrent use; calls are serialised.
type Backend struct {
	netnsFD int

	mu     sync.Mutex
	conn   *nftables.Conn // nil after an error: the next call redials
	nl     *netlink.Conn  // conn's socket, for deadlines
	closed bool

	// cache is what the kernel held after this backend's last read or
	// batch, so that Apply need not read every element back each time
	// (reading 10,000 elements takes tens of milliseconds). It is trusted
	// only while the ruleset generation is still cacheGen, i.e. no one
	// committed any change to any table since, and for at most fullReadEvery
	// after the last full read (cacheRead); any error drops it. Elements the
	// kernel expired meanwhile are dropped by their deadlines (see Apply).
	cache     *kernelState
	cacheGen  uint32
	cacheRead time.Time
	// cacheClock is the caller's clock minus the kernel's (callerOffset)
	// when the cache's deadlines were set. The kernel counts timeouts on
	// its own clock, which a step of the wall clock or a suspend does not
	// move: once the offset moved, the cache's deadlines no longer say when
	// the kernel drops its elements (after a jump ahead it still holds some
	// the cache takes for expired), and the table is read again. It is
	// also the clock of the table's deadlines without a cache (the last
	// full Apply's): ApplyDelta refuses to run on another.
	cacheClock int64
	// layout is the table's layout as the last successful Apply left it:
	// ApplyDelta writes into it without reading the table. Remove drops it.
	layout *layout
	// state, when set, is the file that lets a restarted process trust the
	// table without listing it (statefile.go); stateTried: it was read.
	state      *stateFile
	stateTried bool

	// Test hooks, set only by this package's tests.
	beforeFlush func(c *nftables.Conn, l layout) // queues extra messages
	afterDelta  func()                           // runs between a delta's batch and its generation check
	flushes     int                              // batches sent
	reads       int                              // full reads of the table by Apply
	genReads    int                              // generation asked of the kernel
}

// fullReadEvery bounds how long Apply trusts its cache of the table without
// reading the kernel again, as a defence in depth: the generation check
// already catches every change made by anyone else.
const fullReadEvery = time.Minute

// callerOffset is the caller's clock (the now given to Apply) minus
// CLOCK_MONOTONIC, on which the kernel counts element timeouts. A now that
// carries Go's monotonic reading (time.Now()) is placed by it; one that does
// not is taken to be the current instant, as clock does.
func callerOffset(now time.Time) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	mono := ts.Nano()
	if now != now.Round(0) { // Round(0) strips the monotonic reading
		mono -= int64(time.Since(now))
	}
	return now.UnixNano() - mono
}

// clockSteady reports whether the caller's clock kept its offset to the
// kernel's since the cache was made (to within Tolerance).
func (b *Backend) clockSteady(off int64) bool {
	return time.Duration(off-b.cacheClock).Abs() <= Tolerance
}

// fullReadMax is the number of cached elements above which the periodic
// full read is skipped: listing a set costs the kernel the square of its
// size (see statefile.go), ~3 s at 100,000 elements, minutes at 1,000,000.
// Above it the cache is trusted as long as the generation says nobody else
// committed, which catches every change anyway.
const fullReadMax = 20000

// New opens a lasting netlink connection. It does not touch the ruleset:
// the table is created by the first Apply.
func New(opts ...Option) (*Backend, error) {
	b := &Backend{}
	for _, o := range opts {
		o(b)
	}
	if _, err := b.connection(); err != nil {
		return nil, err
	}
	return b, nil
}

// connection returns the open netlink connection, dialling one if needed.
func (b *Backend) connection() (*nftables.Conn, error) {
	if b.conn != nil {
		return b.conn, nil
	}
	var nl *netlink.Conn
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			nl = c
			return growBuffers(c)
		}),
	}
	if b.netnsFD != 0 {
		opts = append(opts, nftables.WithNetNSFd(b.netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	b.conn, b.nl = c, nl
	return c, nil
}

// growBuffers raises the socket's buffers past the system maximum when the
// process may (CAP_NET_ADMIN, which programming nftables needs anyway), and
// to the system maximum otherwise.
func growBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("sizing netlink buffers: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer))
			}
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("sizing netlink buffers: %w", err)
	}
	return nil
}

// reset drops the connection after an error: its replies may be out of step
// with its requests. The next call dials afresh.
func (b *Backend) reset() {
	if b.conn != nil {
		_ = b.conn.CloseLasting()
	}
	b.conn, b.nl = nil, nil
	b.cache = nil
}

// begin checks that the backend is usable, and applies ctx's deadline and
// cancellation to the socket. The returned function must be called when the
// operation ends, with its error; it resets the connection on error and
// reports ctx's error in preference to the socket's.
func (b *Backend) begin(ctx context.Context) (*nftables.Conn, func(error) error, error) {
	if b.closed {
		return nil, nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	c, err := b.connection()
	if err != nil {
		return nil, nil, err
	}
	nl := b.nl
	if d, ok := ctx.Deadline(); ok {
		nl.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { nl.SetDeadline(time.Unix(1, 0)) })
	end := func(err error) error {
		if !stop() && err == nil {
			// ctx ended just as the operation did: the deadline may be
			// set behind our back, so do not reuse the socket.
			b.reset()
			return nil
		}
		if err != nil {
			b.reset()
			if cerr := ctx.Err(); cerr != nil {
				// The library does not always wrap the socket's timeout.
				return fmt.Errorf("%w: %v", cerr, err)
			}
			return err
		}
		nl.SetDeadline(time.Time{})
		return nil
	}
	return c, end, nil
}

// Close closes the netlink connection. It leaves the table as it is: the
// kernel keeps enforcing the gate, and grants keep expiring on their own.
// Close is idempotent.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var err error
	if b.conn != nil {
		err = b.conn.CloseLasting()
	}
	b.conn, b.nl = nil, nil
	return err
}

// Remove deletes table inet jitgate, opening every port it protected. It is
// meant for a target that is explicitly taken out of jitgate's hands. It is
// idempotent: removing an absent table succeeds. It is one netlink message,
// so it either happens entirely or not at all.
func (b *Backend) Remove(ctx context.Context) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, end, err := b.begin(ctx)
	if err != nil {
		return fmt.Errorf("removing table inet %s: %w", tableName, err)
	}
	defer func() { err = end(err) }()
	exists, err := tableExists(c)
	if err != nil || !exists {
		return err
	}
	b.cache, b.layout = nil, nil
	if b.state != nil {
		os.Remove(b.state.path)
	}
	c.DelTable(ourTable())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing table inet %s: %w", tableName, err)
	}
	return nil
}

// isNotFound reports whether err is the kernel's ENOENT, which a batch gets
// when it deletes an element the kernel expired while the batch was built.
func isNotFound(err error) bool { return errors.Is(err, syscall.ENOENT) }
