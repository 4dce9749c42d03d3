package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/testenv"
)

// TestPackageScriptsAcrossUpgrade runs the .deb's maintainer scripts as
// dpkg calls them, on a machine that runs systemd (a private mount
// namespace with /run/systemd/system, so nothing outside sees it), with a
// systemctl that records what it is asked. An upgrade (prerm upgrade,
// postinst configure OLD) restarts the units that run and stops none for
// good; a removal stops them; a first install starts nothing. Before, prerm
// stopped server and agent on every upgrade and nothing started them
// again: after `apt upgrade` the agent was down, so a grant revoked later
// stayed open in the kernel until its timeout, and no new grant opened.
func TestPackageScriptsAcrossUpgrade(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "calls")
	for _, tool := range []string{"systemctl", "systemd-sysusers"} {
		fake := "#!/bin/sh\necho \"" + tool + " $*\" >> " + log + "\n"
		if err := os.WriteFile(filepath.Join(bin, tool), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	scripts, err := filepath.Abs("../packaging")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		script string
		args   []string
		want   []string
	}{
		{"first install", "postinst.sh", []string{"configure", ""}, []string{"systemctl daemon-reload"}},
		{"upgrade: prerm", "prerm.sh", []string{"upgrade", "9.9.9"}, nil},
		{"upgrade: postinst", "postinst.sh", []string{"configure", "1.0.0"}, []string{"systemctl daemon-reload",
			"systemctl try-restart jitgate-server.service jitgate-agent.service"}},
		{"remove", "prerm.sh", []string{"remove"}, []string{"systemctl stop jitgate-server.service jitgate-agent.service"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(log)
			sh := `mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh "$0" "$@"`
			cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", sh, filepath.Join(scripts, tt.script)}, tt.args...)...)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", tt.script, strings.Join(tt.args, " "), err, b)
			}
			b, _ := os.ReadFile(log)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if strings.HasPrefix(l, "systemctl") {
					got = append(got, l)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("%s %s called:\n%s\nwant:\n%s", tt.script, strings.Join(tt.args, " "), strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
