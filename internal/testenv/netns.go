package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/var/run/netns"

// Netns is a named network namespace made for one test. It starts with only
// the loopback interface, up, and is deleted (with every interface and socket
// left in it) when the test ends.
//
// A Netns is safe for concurrent use.
type Netns struct {
	name string
	file *os.File
}

// NewNetns creates a fresh network namespace named jgtest-<random>, brings
// its loopback up, turns off IPv6 duplicate address detection for interfaces
// added later, and registers its deletion with tb.Cleanup. It calls
// RequireKernel first, so a test can start with it directly.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	RequireKernel(tb)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("naming network namespace: %v", err)
	}
	name := "jgtest-" + hex.EncodeToString(b[:])
	n := &Netns{name: name}
	// Registered before the add, so that a namespace `ip netns add` made
	// before failing is removed too.
	tb.Cleanup(func() {
		if n.file != nil {
			n.file.Close()
		}
		n.delete(tb)
	})
	run(tb, "ip", "netns", "add", name)
	f, err := os.Open(filepath.Join(netnsDir, name))
	if err != nil {
		tb.Fatalf("opening network namespace %s: %v", name, err)
	}
	n.file = f
	n.Run(tb, "ip", "link", "set", "lo", "up")
	// Interfaces added later skip duplicate address detection: a tentative
	// link-local address delays the first IPv6 connection by a second.
	err = n.Do(func() error {
		for _, conf := range []string{"all", "default"} {
			p := "/proc/sys/net/ipv6/conf/" + conf + "/accept_dad"
			if err := os.WriteFile(p, []byte("0"), 0); err != nil {
				return fmt.Errorf("disabling DAD: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("setting up network namespace %s: %v", name, err)
	}
	return n
}

// delete removes the namespace if it exists, retrying briefly: a concurrent
// `ip netns add` can hold the mount point busy for a moment.
func (n *Netns) delete(tb testing.TB) {
	tb.Helper()
	path := filepath.Join(netnsDir, n.name)
	var out []byte
	var err error
	for range 5 {
		if _, statErr := os.Stat(path); os.IsNotExist(statErr) {
			return
		}
		if out, err = exec.Command("ip", "netns", "delete", n.name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Errorf("deleting network namespace %s: %v: %s", n.name, err, out)
}

// Name is the namespace's name as `ip netns` knows it.
func (n *Netns) Name() string { return n.name }

// FD is a file descriptor referring to the namespace, for
// nftables.WithNetNSFd or netlink.Config.NetNS. It stays valid until the test
// ends; callers must not close it.
func (n *Netns) FD() int { return int(n.file.Fd()) }

// Command returns an exec.Cmd that runs name inside the namespace
// (through `ip netns exec`).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its standard output.
// It fails tb, with the command's output, if the command fails.
func (n *Netns) Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace and returns fn's
// error. Sockets fn creates belong to the namespace for their whole life, so
// a listener or connection made inside Do can be used from any goroutine
// afterwards.
//
// The thread is never handed back to the Go scheduler: it stays locked and
// exits with its goroutine, so no other goroutine can run in the wrong
// namespace. (Go creates new threads from a clean template thread, never by
// cloning a locked one.)
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose: see the doc comment.
		if err := unix.Setns(n.FD(), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", n.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen is net.Listen inside the namespace.
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// DialContext is d.DialContext inside the namespace. Set d.LocalAddr to pick
// the source address when the namespace has several.
func (n *Netns) DialContext(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	var stderr strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
