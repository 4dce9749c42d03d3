package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestAgentTextSanitized: what an agent reports about its host (version,
// hostname, kernel, the reason it cannot enforce, process and interface
// names, blocked sources) is stored inert and bounded: escape sequences,
// bells, newlines and bidirectional overrides escaped, lengths cut. The
// report itself is accepted: refusing it would blind the server to the host.
func TestAgentTextSanitized(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.srv.URL, "")
	er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web\x1b[2J", Version: "1.0\x1b[2J\x07",
		Addresses: []string{"198.51.100.10\n"}})
	if err != nil {
		t.Fatalf("Enroll with control characters: %v, want it accepted", err)
	}
	if tg, err := e.st.GetTarget(ctx, "web-01"); err != nil || tg.AgentVersion != `1.0\u001b[2J\u0007` ||
		len(tg.Addresses) != 1 || tg.Addresses[0] != `198.51.100.10\n` {
		t.Errorf("after enrolling: version %q, addresses %q, %v; want them escaped", tg.AgentVersion, tg.Addresses, err)
	}

	agent := anon.WithToken(er.Credential)
	long := strings.Repeat("h", 10000)
	err = agent.Report(ctx, wire.AgentReport{Mode: "host", Version: "2.0\a", Error: "apply failed\nINFO forged log line",
		Inventory: &wire.Inventory{
			Hostname: "host\x1b]0;owned\x07", Reason: "no nft\u202egnp.exe", Kernel: long,
			Listening: []wire.Listener{{Address: "0.0.0.0", Port: 22, Protocol: "tcp", Process: "sshd\r\n\x1b[31mroot"}},
			Links:     []wire.Link{{Name: "eth0\u2066x\u2069", Prefixes: []string{"192.0.2.0/24"}}},
		},
		BlockedSources: []wire.BlockedSource{{Source: "203.0.113.7\x1b[1m", Protocol: "tcp", Port: 22, Count: 1, LastSeen: time.Now()}},
	})
	if err != nil {
		t.Fatalf("Report with control characters: %v, want it accepted", err)
	}
	tg, err := e.st.GetTarget(ctx, "web-01")
	if err != nil || tg.Inventory == nil {
		t.Fatalf("GetTarget: %+v, %v", tg, err)
	}
	inv := tg.Inventory
	for _, c := range []struct{ what, got, want string }{
		{"version", tg.AgentVersion, `2.0\u0007`},
		{"error", tg.AgentError, `apply failed\nINFO forged log line`},
		{"hostname", inv.Hostname, `host\u001b]0;owned\u0007`},
		{"reason", inv.Reason, `no nft\u202egnp.exe`},
		{"process", inv.Listening[0].Process, `sshd\r\n\u001b[31mroot`},
		{"interface", inv.Links[0].Name, `eth0\u2066x\u2069`},
		{"prefix", inv.Links[0].Prefixes[0], "192.0.2.0/24"},
	} {
		if c.got != c.want {
			t.Errorf("stored %s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if n := text.Len(inv.Kernel); n > 255 || !strings.HasSuffix(inv.Kernel, "…") {
		t.Errorf("a 10,000-character kernel string stored as %d characters, want it cut to at most 255", n)
	}
	b, err := e.st.BlockedFor(ctx, tg, time.Now(), 10)
	if err != nil || len(b.Sources) != 1 || b.Sources[0].Source != `203.0.113.7\u001b[1m` {
		t.Errorf("blocked sources: %+v, %v; want the source escaped", b.Sources, err)
	}

	// Nothing stored about the agent holds a character Check refuses.
	raw, _ := json.Marshal(tg)
	var all []string
	collectStrings(t, raw, &all)
	evs, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AgentEnrolled)})
	if err != nil || len(evs) != 1 {
		t.Fatalf("agent.enrolled events: %d, %v", len(evs), err)
	}
	raw, _ = json.Marshal(evs[0].Details)
	collectStrings(t, raw, &all)
	for _, s := range all {
		if err := text.Check(s); err != nil {
			t.Errorf("stored %q: %v", s, err)
		}
	}
}

// collectStrings appends every string in the JSON document raw to out.
func collectStrings(t *testing.T, raw []byte, out *[]string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			*out = append(*out, v)
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
}
