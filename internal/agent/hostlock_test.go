package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
