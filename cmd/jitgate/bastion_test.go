package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestBastionCommandErrors checks the bastion commands' refusals: usage
// mistakes exit 2 with one error line and a hint, refusals by the server
// exit 1 with one line that says why.
func TestBastionCommandErrors(t *testing.T) {
	s := newTestServer(t)
	usage := []struct {
		name string
		args []string
		want []string
	}{
		{"connect without port", []string{"connect", "web-01", "--stdio"}, []string{"--port is required"}},
		{"connect udp", []string{"connect", "web-01", "--port", "53/udp", "--stdio"}, []string{"only TCP"}},
		{"connect on every address", []string{"connect", "web-01", "--port", "22", "--local", "0.0.0.0:0"}, []string{"loopback"}},
		{"connect stdio and local", []string{"connect", "web-01", "--port", "22", "--stdio", "--local", "127.0.0.1:0"}, []string{"exclude each other"}},
		{"ssh without target", []string{"ssh"}, []string{"missing [USER@]TARGET"}},
		{"ssh command without dash", []string{"ssh", "web-01", "uptime"}, []string{"after --"}},
		{"ssh bad target", []string{"ssh", "root@Web_01"}, []string{"DNS label"}},
		{"kill without reason", []string{"sessions", "kill", "s-1"}, []string{"--reason is required"}},
		{"policy access", []string{"policy", "set", "web-01", "--port", "22", "--access", "tunnel"}, []string{"--access", "direct, bastion or both"}},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			r := newCLI(t, s).run(tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, exitUsage, r.stderr)
			}
			checkErrorLine(t, r, 2, tt.want...)
		})
	}

	c := newCLI(t, s)
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "web-01", "--port", "22", "--access", "bastion")
	if out := c.ok("policy", "show", "web-01").stdout; !strings.Contains(out, "access bastion") {
		t.Errorf("policy show does not say the access: %q", out)
	}
	checkOneLineError(t, c.run("connect", "web-01", "--port", "22", "--stdio"), "no active grant", "--bastion")
	checkOneLineError(t, c.run("connect", "web-01", "--port", "8022", "--stdio"), "does not configure this port")
	checkOneLineError(t, c.run("sessions", "kill", "s-nope", "--reason", "x", "--yes"), "not found")
	r := c.run("ssh", "web-01")
	if r.code != exitUsage || !strings.Contains(r.stderr, "give --duration") {
		t.Errorf("ssh without a grant or --duration: exit %d, stderr %q", r.code, r.stderr)
	}
	req := c.ok("request", "web-01", "--port", "22", "--bastion", "--duration", "1h", "--reason", "x")
	if !strings.Contains(req.stdout, "through the bastion only") {
		t.Errorf("request --bastion output does not say it has no source: %q", req.stdout)
	}
	if r := c.ok("sessions"); r.stdout != "" || !strings.Contains(r.stderr, "no sessions") {
		t.Errorf("sessions with none: stdout %q stderr %q", r.stdout, r.stderr)
	}
}

// TestConnectListensOnLoopbackOnly: every connection a local tunnel
// listener accepts is relayed under the user's token and grant, so a
// listener on every address (or a LAN one) would make the user's access an
// open proxy for the network. Only loopback addresses are accepted.
func TestConnectListensOnLoopbackOnly(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	for _, tt := range []struct {
		local string
		ok    bool
	}{
		{"", true},
		{"127.0.0.1:0", true},
		{"localhost:0", true},
		{"0.0.0.0:0", false},
		{":0", false},
		{"[::]:0", false},
		{"[fe80::1%lo]:0", false},
	} {
		t.Run(tt.local, func(t *testing.T) {
			ln, err := a.listenLocal(tt.local, "web-01", 22)
			if ln != nil {
				ln.Close()
			}
			if tt.ok && err != nil {
				t.Fatalf("listenLocal(%q): %v", tt.local, err)
			}
			var ue *usageError
			if !tt.ok && (err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), "loopback")) {
				t.Fatalf("listenLocal(%q) = %v, want a usage error asking for a loopback address", tt.local, err)
			}
		})
	}
}
