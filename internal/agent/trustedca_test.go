package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteTrustedCA: the file gets the CA line (0644), only a plain public
// key is written, and a garbage answer leaves the installed key alone.
func TestWriteTrustedCA(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl jitgate-ssh-ca"
	path := filepath.Join(t.TempDir(), "jitgate_ca.pub")
	if err := writeTrustedCA(path, key); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != key+"\n" {
		t.Fatalf("file %q, %v; want the key line", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	for _, bad := range []string{"", "not a key", key + "\n" + key, "cert-authority " + key} {
		if err := writeTrustedCA(path, bad); err == nil {
			t.Errorf("%q written", bad)
		}
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "ssh-ed25519 ") {
		t.Errorf("installed key changed to %q", b)
	}
}
