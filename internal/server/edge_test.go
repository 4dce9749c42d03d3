package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// startServer runs the real server with cfg like serve (logs into logs),
// and returns the address it listens on and an admin client when it serves
// plain HTTP.
func startServer(t *testing.T, cfg Config, logs *lockedBuffer) (addr string, admin *client.Client) {
	t.Helper()
	addr, token := serve(t, cfg, logs)
	if cfg.TLSCert != "" {
		return addr, nil
	}
	admin, err := client.New("http://"+addr, token)
	if err != nil {
		t.Fatal(err)
	}
	return addr, admin
}

// TestCleartextWarning: the server warns when it serves plain HTTP on an
// address other hosts can reach, and only then.
func TestCleartextWarning(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	for _, tc := range []struct {
		name   string
		listen string
		tls    bool
		warn   bool
	}{
		{name: "IPv4 loopback", listen: "127.0.0.1:0"},
		{name: "IPv6 loopback", listen: "[::1]:0"},
		{name: "every address", listen: "0.0.0.0:0", warn: true},
		{name: "every address, IPv6", listen: "[::]:0", warn: true},
		{name: "every address with TLS", listen: "0.0.0.0:0", tls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Listen: tc.listen}
			if tc.tls {
				cfg.TLSCert, cfg.TLSKey = cert, key
			}
			var logs lockedBuffer
			startServer(t, cfg, &logs)
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "plain HTTP on a non-loopback address")
			if warned != tc.warn {
				t.Errorf("warned %v, want %v; log:\n%s", warned, tc.warn, logs.String())
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:8080": true, "[::1]:8080": true, "[::ffff:127.0.0.1]:8080": true,
		"0.0.0.0:8080": false, "[::]:8080": false, "192.0.2.2:8080": false, "[2001:db8::2]:8080": false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopback(a); got != want {
			t.Errorf("loopback(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestBruteForceThresholdSetting: the server's BruteForceThreshold (flag
// --brute-force-threshold) decides how many blocked attempts from one
// source raise attack.suspected.
func TestBruteForceThresholdSetting(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int // Config value: 0 default (20), negative never
		attempts  int
		want      int // attack.suspected events
	}{
		{name: "lowered to 3: 5 attempts raise it", threshold: 3, attempts: 5, want: 1},
		{name: "default 20: 5 attempts do not", threshold: 0, attempts: 5},
		{name: "default 20: 25 attempts do", threshold: 0, attempts: 25, want: 1},
		{name: "raised to 100: 25 attempts do not", threshold: 100, attempts: 25},
		{name: "never", threshold: -1, attempts: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			_, admin := startServer(t, Config{Listen: "127.0.0.1:0", BruteForceThreshold: tc.threshold}, &logs)
			ctx := context.Background()
			tc2, err := admin.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"})
			if err != nil {
				t.Fatal(err)
			}
			er, err := admin.WithToken("").Enroll(ctx, tc2.EnrollToken, wire.EnrollRequest{Hostname: "web-01"})
			if err != nil {
				t.Fatal(err)
			}
			agent := admin.WithToken(er.Credential)
			src := wire.BlockedSource{Source: "203.0.113.66", Protocol: "tcp", Port: 22, Count: tc.attempts, LastSeen: time.Now()}
			if err := agent.Report(ctx, wire.AgentReport{BlockedSources: []wire.BlockedSource{src}}); err != nil {
				t.Fatalf("report: %v (status %d)", err, client.StatusOf(err))
			}
			es, err := admin.Audit(ctx, client.AuditFilter{Action: "attack.suspected"})
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != tc.want {
				t.Errorf("%d attack.suspected events after %d blocked attempts, want %d: %+v", len(es), tc.attempts, tc.want, es)
			}
		})
	}
}

// TestFloodOfBadTokensIsQuiet: a flood of bad tokens from one address costs
// one log line (and one audit event) for each of the first five failures,
// then nothing per refused attempt; a valid token from the same address is
// still served.
func TestFloodOfBadTokensIsQuiet(t *testing.T) {
	var logs lockedBuffer
	addr, admin := startServer(t, Config{Listen: "127.0.0.1:0"}, &logs)
	statuses := map[int]int{}
	for i := range 50 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", fmt.Sprintf("Bearer jga_bogus%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[http.StatusUnauthorized] != 5 || statuses[http.StatusTooManyRequests] != 45 {
		t.Fatalf("answers %v, want 5 × 401 then 45 × 429", statuses)
	}
	if _, err := admin.Whoami(context.Background()); err != nil {
		t.Fatalf("admin from the flooding address: %v", err)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="login failed"`); n != 5 {
		t.Errorf("%d \"login failed\" lines, want 5", n)
	}
	if n := strings.Count(out, "status=429"); n != 0 {
		t.Errorf("%d log lines for 429 answers, want none (the flood must not fill the log)", n)
	}
}
