package agent

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSecondAgentOnOneHostRefused: a second agent in the same network
// namespace cannot take the table, whatever its state directory, and the
// refusal names the first (pid, target, state directory); once the first
// is gone the table can be taken.
func TestSecondAgentOnOneHostRefused(t *testing.T) {
	lockDir := t.TempDir()
	first := filepath.Join(t.TempDir(), "state-a")
	if err := saveCredential(filepath.Join(first, credentialName), credential{ServerURL: "https://jit.example", Target: "web-1", Credential: "SECRET"}); err != nil {
		t.Fatal(err)
	}
	l1, err := LockHost(lockDir, first)
	if err != nil {
		t.Fatalf("first agent: %v", err)
	}
	_, err = LockHost(lockDir, filepath.Join(t.TempDir(), "state-b"))
	want := []string{"another jitgate agent", fmt.Sprintf("pid %d", os.Getpid()), "target web-1", first}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("second agent: %v; want a refusal naming %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the refusal shows the first agent's credential: %v", err)
	}
	l1.Release()
	l3, err := LockHost(lockDir, first)
	if err != nil {
		t.Fatalf("after the first agent stopped: %v", err)
	}
	l3.Release()
}

// TestUnprivilegedUserCannotHoldHostLock: the lock file was world-readable,
// and flock works on a read-only file, so any local user of the target
// (nobody here) could take the lock while the agent restarted and keep it
// from ever starting again: no new grant applied, no revocation confirmed.
// The lock file is the agent's own (0600); another user cannot open it.
func TestUnprivilegedUserCannotHoldHostLock(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (to run a process as nobody)")
		}
		t.Skip("needs root (to run a process as nobody)")
	}
	// A lock directory anyone may traverse, as /run/jitgate is.
	lockDir, err := os.MkdirTemp("", "jitgate-lock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(lockDir) })
	if err := os.Chmod(lockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	l, err := LockHost(lockDir, state)
	if err != nil {
		t.Fatal(err)
	}
	l.Release() // the agent restarts
	files, _ := filepath.Glob(filepath.Join(lockDir, "agent-netns-*.lock"))
	if len(files) != 1 {
		t.Fatalf("lock files: %v", files)
	}
	// nobody tries to take the lock and keep it: flock says "locked" once
	// it holds it, or fails at once.
	cmd := exec.Command("flock", "-n", files[0], "sh", "-c", "echo locked; exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	first, _ := bufio.NewReader(stdout).ReadString('\n') // "locked", or EOF when flock failed
	if strings.TrimSpace(first) == "locked" {
		t.Log("nobody holds the agent's lock")
	}
	l2, err := LockHost(lockDir, state)
	if err != nil {
		t.Fatalf("the agent could not take its lock back from an unprivileged user: %v", err)
	}
	l2.Release()
}
