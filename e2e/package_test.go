package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// The installed package's paths (packaging/nfpm.yaml).
const (
	pkgBinary     = "/usr/bin/jitgate"
	pkgAgentUnit  = "/usr/lib/systemd/system/jitgate-agent.service"
	pkgServerUnit = "/usr/lib/systemd/system/jitgate-server.service"
)

// TestDebianPackage builds the .deb with scripts/release.sh (nfpm), installs
// it on this machine with dpkg, and checks what an operator gets: the
// stamped binary, the units (systemd-analyze verify), the default config,
// the system user. Then it runs the installed binary as the units do — the
// server as the jitgate user with no capability, the agent with exactly
// the capabilities its unit grants (read from the installed unit file,
// applied with setpriv) — in network namespaces, and sees the agent
// enforce: the gated port is closed, and a grant opens it for real
// packets. It purges the package at the end, leaving the machine as it was.
func TestDebianPackage(t *testing.T) {
	testenv.RequireKernel(t)
	for _, tool := range []string{"dpkg", "systemd-analyze", "setpriv", "sshd"} {
		testenv.RequireTool(t, tool)
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "jitgate").CombinedOutput(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("a jitgate package is already installed on this machine (%s): remove it (dpkg --purge jitgate) before running this test", out)
	}
	if _, err := os.Stat(pkgBinary); err == nil {
		t.Fatalf("%s exists and is not from a jitgate package: not overwriting it", pkgBinary)
	}
	_, userErr := user.Lookup("jitgate")
	userExisted := userErr == nil

	const version = "v9.8.7-pkgtest"
	const commit = "0123456789abcdef0123456789abcdef01234567"
	out := t.TempDir()
	t.Log("building the .deb (scripts/release.sh, nfpm)")
	rel := exec.Command("bash", "../scripts/release.sh", version)
	// TRIMPATH=0 reuses the build cache of the other tests; releases keep
	// -trimpath.
	rel.Env = append(os.Environ(), "OUT="+out, "ONLY=deb", "TRIMPATH=0", "COMMIT="+commit)
	if b, err := rel.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "jitgate_*_"+runtime.GOARCH+".deb"))
	if len(debs) != 1 {
		entries, _ := os.ReadDir(out)
		t.Fatalf("want one .deb for %s in %s, found %v (dir: %v)", runtime.GOARCH, out, debs, entries)
	}
	if want := "jitgate_9.8.7-pkgtest_" + runtime.GOARCH + ".deb"; filepath.Base(debs[0]) != want {
		t.Errorf("package file %s, want %s", filepath.Base(debs[0]), want)
	}

	t.Log("installing it")
	t.Cleanup(func() {
		if b, err := exec.Command("dpkg", "--purge", "jitgate").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge jitgate: %v\n%s", err, b)
		}
		if _, err := os.Stat(pkgBinary); err == nil {
			t.Errorf("%s is still there after dpkg --purge", pkgBinary)
		}
		if !userExisted {
			if b, err := exec.Command("userdel", "jitgate").CombinedOutput(); err != nil {
				t.Errorf("userdel jitgate: %v\n%s", err, b)
			}
			exec.Command("groupdel", "jitgate").Run() // gone with the user when it was the user's group
		}
	})
	if b, err := exec.Command("dpkg", "-i", debs[0]).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	files := runOK(t, "dpkg", "-L", "jitgate")
	for _, f := range []string{pkgBinary, pkgAgentUnit, pkgServerUnit, "/usr/lib/sysusers.d/jitgate.conf",
		"/etc/jitgate/server.yaml", "/etc/default/jitgate-agent"} {
		if !strings.Contains(files, f+"\n") {
			t.Errorf("the package does not hold %s; it holds:\n%s", f, files)
		}
	}
	if fi, err := os.Stat("/etc/default/jitgate-agent"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("/etc/default/jitgate-agent (it may hold the enrollment token): %v, %v; want mode 0600", fi.Mode(), err)
	}
	if conf := runOK(t, "dpkg-query", "-W", "-f=${Conffiles}", "jitgate"); !strings.Contains(conf, "/etc/jitgate/server.yaml") {
		t.Errorf("/etc/jitgate/server.yaml is not a conffile (an upgrade would overwrite the operator's settings): %q", conf)
	}
	jg, err := user.Lookup("jitgate")
	if err != nil {
		t.Fatalf("the package created no jitgate user: %v", err)
	}
	// The server's settings may hold secrets (the server refuses them in a
	// file every user can read): the server's group reads it, others not.
	if fi, err := os.Stat("/etc/jitgate/server.yaml"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("/etc/jitgate/server.yaml (it may hold secrets): %v, %v; want mode 0640", fi.Mode(), err)
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !ok || fmt.Sprint(st.Gid) != jg.Gid {
		t.Errorf("/etc/jitgate/server.yaml: group %v, want jitgate (%s): the server could not read it", fi.Sys(), jg.Gid)
	}

	t.Log("jitgate version: the stamped version and commit")
	if v := runOK(t, pkgBinary, "version", "--client"); !strings.Contains(v, "jitgate "+version+" commit "+commit[:12]) {
		t.Errorf("jitgate version --client:\n%s\nwant version %s and commit %s", v, version, commit[:12])
	}
	t.Log("jitgate server --check-config: the installed default configuration is valid (the unit's ExecStartPre)")
	runOK(t, pkgBinary, "server", "--check-config")

	t.Log("systemd-analyze verify of the installed units")
	for _, unit := range []string{pkgServerUnit, pkgAgentUnit} {
		if b, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, b)
		}
	}
	agentUnit := readUnit(t, pkgAgentUnit)
	serverUnit := readUnit(t, pkgServerUnit)
	for _, u := range []struct {
		name string
		keys map[string]string
		want map[string]string
	}{
		{"agent", agentUnit, map[string]string{"ProtectSystem": "strict", "StateDirectory": "jitgate-agent", "Restart": "on-failure",
			"After": "network-online.target", "Wants": "network-online.target", "NoNewPrivileges": "yes"}},
		{"server", serverUnit, map[string]string{"User": "jitgate", "ProtectSystem": "strict", "StateDirectory": "jitgate",
			"Restart": "on-failure", "After": "network-online.target", "Wants": "network-online.target", "CapabilityBoundingSet": "",
			"NoNewPrivileges": "yes"}},
	} {
		for k, want := range u.want {
			if got, ok := u.keys[k]; !ok || got != want {
				t.Errorf("%s unit: %s=%q (set: %v), want %q", u.name, k, got, ok, want)
			}
		}
	}
	caps := unitCaps(t, agentUnit)
	if strings.Join(caps, ",") != "net_admin" {
		t.Errorf("the agent unit grants %v; want only CAP_NET_ADMIN", caps)
	}

	t.Log("the server as its own user without capabilities, the agent with the unit's capabilities, in namespaces")
	l := testlab.New(t)
	l.Binary = pkgBinary
	// The server's data directory, owned by its user, where that user can
	// reach it (t.TempDir's parent is root's alone).
	data, err := os.MkdirTemp("", "jitgate-pkg-server-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	runOK(t, "chown", jg.Uid+":"+jg.Gid, data)
	l.Server = l.Start(l.ServerNS, "jitgate server (as the unit runs it)", "setpriv",
		"--reuid="+jg.Uid, "--regid="+jg.Gid, "--init-groups", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--",
		pkgBinary, "server", "--listen", fmt.Sprintf("0.0.0.0:%d", testlab.APIPort), "--data-dir", data,
		"--activation-timeout", testlab.DefaultActivationTimeout.String())
	l.Eventually("server healthy", 15*time.Second, func() bool { return l.CanConnect(client1, serverIP, testlab.APIPort) })
	var tok []byte
	l.Eventually("admin token written", 5*time.Second, func() bool { tok, err = os.ReadFile(filepath.Join(data, "admin.token")); return err == nil })
	l.Token = strings.TrimSpace(string(tok))

	created := testlab.CLIJSON[wire.TargetCreated](l, "target", "add", "web-01")
	setprivArgs := append([]string{"--bounding-set=-all," + plusEach(caps), "--inh-caps=-all," + plusEach(caps),
		"--ambient-caps=-all," + plusEach(caps)}, "--no-new-privs", "--",
		pkgBinary, "agent", "--server", fmt.Sprintf("http://127.0.0.1:%d", testlab.APIPort),
		"--state-dir", filepath.Join(l.Dir, "agent"), "--enroll-token", created.EnrollToken)
	l.Agent = l.Start(l.ServerNS, "jitgate agent (with the unit's capabilities)", "setpriv", setprivArgs...)
	l.Eventually("agent connected", 15*time.Second, func() bool {
		return testlab.CLIJSON[wire.Target](l, "target", "show", "web-01").Agent.State == "connected"
	})
	// The agent's capabilities are the unit's, and nothing more.
	if eff := procCaps(t, l.Agent.Pid()); eff != capMask(t, caps) {
		t.Errorf("the agent runs with effective capabilities %#x, want %#x (%v)", eff, capMask(t, caps), caps)
	}
	testlab.CLIJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h")
	l.WaitApplied("web-01")
	if l.CanConnect(client1, serverIP, 22) {
		t.Fatal("22/tcp open without a grant: the packaged agent does not enforce")
	}
	testlab.CLIJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "package test", "--wait")
	l.Eventually("the grant opens 22/tcp", 10*time.Second, func() bool { return l.CanConnect(client1, serverIP, 22) })
	if l.CanConnect(client2, serverIP, 22) {
		t.Error("22/tcp open for a second source that holds no grant")
	}

	t.Log("jitgate version: the client's and the server's")
	if v := l.CLI("version"); !strings.Contains(v, "client: jitgate "+version) || !strings.Contains(v, "server: jitgate "+version+" commit "+commit[:12]) {
		t.Errorf("jitgate version against the packaged server:\n%s", v)
	}
	var vj struct {
		Version string `json:"version"`
		Server  *struct {
			Version string `json:"version"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(l.CLI("version", "-o", "json")), &vj); err != nil || vj.Version != version || vj.Server == nil || vj.Server.Version != version {
		t.Errorf("jitgate version -o json: %+v, %v", vj, err)
	}
}

// readUnit reads the [Service] and [Unit] keys of a systemd unit file (the
// last value of a key wins, as in systemd; an empty assignment resets).
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			keys[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return keys
}

// unitCaps is the set of capabilities a unit's process keeps: those in
// both CapabilityBoundingSet and AmbientCapabilities (lower case, without
// the CAP_ prefix, as setpriv names them).
func unitCaps(t *testing.T, unit map[string]string) []string {
	t.Helper()
	bounding, ok1 := unit["CapabilityBoundingSet"]
	ambient, ok2 := unit["AmbientCapabilities"]
	if !ok1 || !ok2 {
		t.Fatalf("the agent unit lacks CapabilityBoundingSet or AmbientCapabilities: %v", unit)
	}
	inBounding := map[string]bool{}
	for _, c := range strings.Fields(bounding) {
		inBounding[strings.ToLower(strings.TrimPrefix(c, "CAP_"))] = true
	}
	var caps []string
	for _, c := range strings.Fields(ambient) {
		if c := strings.ToLower(strings.TrimPrefix(c, "CAP_")); inBounding[c] {
			caps = append(caps, c)
		}
	}
	return caps
}

func plusEach(caps []string) string {
	s := make([]string, len(caps))
	for i, c := range caps {
		s[i] = "+" + c
	}
	return strings.Join(s, ",")
}

// capNumbers are the capabilities a unit may name here (linux/capability.h).
var capNumbers = map[string]uint{"net_admin": 12, "net_raw": 13, "net_bind_service": 10, "sys_admin": 21, "dac_override": 1}

func capMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	var m uint64
	for _, c := range caps {
		n, ok := capNumbers[c]
		if !ok {
			t.Fatalf("unknown capability %q", c)
		}
		m |= 1 << n
	}
	return m
}

// procCaps reads a process's effective capability set from
// /proc/PID/status. pid is `ip netns exec`'s, which execs setpriv, which
// execs the agent: the same process.
func procCaps(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapEff:\s*([0-9a-f]+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no CapEff in /proc/%d/status", pid)
	}
	var v uint64
	fmt.Sscanf(string(m[1]), "%x", &v)
	return v
}

func runOK(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.CommandContext(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}
