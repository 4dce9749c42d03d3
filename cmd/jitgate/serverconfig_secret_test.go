package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestServerConfigSecretsNotWorldReadable: a configuration file that every
// local user may read (the .deb shipped /etc/jitgate/server.yaml 0644) is
// refused when it holds a secret — the OIDC client secret, or a database
// URL with a password — naming the line and how to fix it, as ssh refuses
// a private key others can read. Before, the server started and any user on
// its host could read them. The same file without secrets, or with mode
// 0640, is accepted.
func TestServerConfigSecretsNotWorldReadable(t *testing.T) {
	dir := t.TempDir()
	c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": t.TempDir()}}
	tests := []struct {
		name, body string
		mode       os.FileMode
		refused    bool
		want       []string
	}{
		{"client secret, 0644", "data-dir: " + dir + "/data\noidc-client-secret: s3cr3t\n", 0o644, true, []string{":2", "oidc-client-secret", "chmod"}},
		{"database password, 0644", "data-dir: " + dir + "/data\n\ndatabase: postgres://jitgate:pw@db.example/jitgate\n", 0o644, true, []string{":3", "database", "chmod"}},
		{"database password in the query, 0604", "data-dir: " + dir + "/data\ndatabase: postgres://db.example/jitgate?password=pw\n", 0o604, true, []string{":2", "database"}},
		{"client secret, 0640", "data-dir: " + dir + "/data\noidc-client-secret: s3cr3t\n", 0o640, false, nil},
		{"database without password, 0644", "data-dir: " + dir + "/data\ndatabase: postgres://jitgate@db.example/jitgate\n", 0o644, false, nil},
		{"no secret, 0644", "data-dir: " + dir + "/data\nlisten: 127.0.0.1:9001\n", 0o644, false, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "server"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(p, []byte(tc.body), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			r := c.run("server", "--config", p, "--check-config")
			if !tc.refused {
				if r.code != 0 {
					t.Fatalf("exit %d, want 0; stderr %s", r.code, r.stderr)
				}
				return
			}
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %s", r.code, exitUsage, r.stderr)
			}
			checkErrorLine(t, r, 2, tc.want...)
		})
	}
}
