//go:build unix

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/jitgate/jitgate/internal/smallfile"
)

// DefaultLockDir is where agents take the lock of their network namespace.
const DefaultLockDir = "/run/jitgate"

// ErrHostLocked is returned by LockHost when another agent holds the lock.
var ErrHostLocked = errors.New("another jitgate agent already programs table inet jitgate on this host")

// HostLock is held by the agent that programs table inet jitgate of one
// network namespace. Two agents on one host would each reconcile the table
// to their own desired state, undoing each other's changes many times a
// minute (and one would delete the other's grants); so the second refuses
// to start and names the first. The lock is per network namespace (the
// table's scope), not per state directory: agents with different state
// directories collide too. The kernel releases it when the holder exits,
// however it exits.
type HostLock struct {
	f *os.File
	// tablePath records which target's agent last programmed the table
	// (see Claim); claimed is what this process wrote there last.
	tablePath string
	claimed   string
}

// lockInfo is what the lock file says about its holder.
type lockInfo struct {
	PID      int    `json:"pid"`
	StateDir string `json:"state_dir"`
	Target   string `json:"target,omitempty"`
}

// LockHost takes the lock of the current network namespace in dir (created
// 0755 if needed), or returns an error naming the agent that holds it.
func LockHost(dir, stateDir string) (*HostLock, error) {
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("agent: identifying the network namespace: %w", err)
	}
	// "net:[4026531840]" -> "4026531840"
	id := strings.TrimSuffix(strings.TrimPrefix(ns, "net:["), "]")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: creating the lock directory: %w", err)
	}
	path := filepath.Join(dir, "agent-netns-"+id+".lock")
	// The agent's own (0600): flock works on a file opened read-only, so a
	// lock file others can read is one any local user can take and hold,
	// keeping the agent from starting again (no grant applied, no
	// revocation confirmed). An agent of another user (given CAP_NET_ADMIN)
	// cannot open it and refuses too, naming the file's owner: two agents
	// still never share the table.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrPermission) {
		owner := "another user"
		if fi, serr := os.Stat(path); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = fmt.Sprintf("uid %d", st.Uid)
			}
		}
		return nil, fmt.Errorf("agent: %w (network namespace %s): its lock %s belongs to %s, the user of another agent; "+
			"two agents would undo each other's rules: stop it first (remove the file if no agent of that user runs)", ErrHostLocked, id, path, owner)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: opening %s: %w", path, err)
	}
	// A lock file made readable by others (an earlier version) is theirs to
	// flock: make it the agent's own again.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("agent: restricting %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("agent: locking %s: %w", path, err)
		}
		return nil, fmt.Errorf("agent: %w (network namespace %s): %s; two agents would undo each other's rules: stop it first",
			ErrHostLocked, id, describeHolder(path))
	}
	abs, _ := filepath.Abs(stateDir)
	info := lockInfo{PID: os.Getpid(), StateDir: abs}
	if c, err := loadCredential(filepath.Join(stateDir, credentialName)); err == nil {
		info.Target = c.Target
	}
	b, _ := json.Marshal(info)
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt(append(b, '\n'), 0)
	}
	return &HostLock{f: f, tablePath: filepath.Join(dir, "agent-netns-"+id+".table")}, nil
}

// Claim records, before the agent of target programs the table, that the
// table is that target's. The record lives in /run like the lock: it goes
// with a reboot, as the kernel table does. An agent told that its target
// was removed deletes the table only when the record names its target or
// nothing (see Owner): a leftover agent of a removed target that took the
// lock while the host's agent restarted must not delete the table of the
// target this host is now, opening every port it protects.
func (l *HostLock) Claim(target string) error {
	if target == "" || target == l.claimed {
		return nil
	}
	if err := os.WriteFile(l.tablePath, []byte(target+"\n"), 0o600); err != nil {
		return fmt.Errorf("agent: recording the table's target in %s: %w", l.tablePath, err)
	}
	l.claimed = target
	return nil
}

// Owner returns the target whose agent last programmed the table ("" when
// unknown: no record since boot, or unreadable).
func (l *HostLock) Owner() string {
	b, err := smallfile.Read(l.tablePath, 1024)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// describeHolder names the agent holding the lock at path: its pid, its
// state directory and its target (from its credential when the lock file
// was written before it enrolled).
func describeHolder(path string) string {
	var info lockInfo
	b, err := smallfile.Read(path, 64<<10)
	if err != nil || json.Unmarshal(b, &info) != nil || info.PID == 0 {
		return "its lock " + path + " is held (holder unknown)"
	}
	if info.Target == "" && info.StateDir != "" {
		if c, err := loadCredential(filepath.Join(info.StateDir, credentialName)); err == nil {
			info.Target = c.Target
		}
	}
	target := info.Target
	if target == "" {
		target = "not enrolled yet"
	}
	return fmt.Sprintf("pid %d, target %s, state directory %s", info.PID, target, info.StateDir)
}

// Release lets another agent take the table.
func (l *HostLock) Release() error { return l.f.Close() }
