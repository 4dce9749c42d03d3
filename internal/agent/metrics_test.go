package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestAgentMetrics: the agent's own metrics count applies by result, hold
// the applied revision and element count, and name the build.
func TestAgentMetrics(t *testing.T) {
	api, srv := newFakeAPI(t)
	reg := prometheus.NewRegistry()
	cfg := enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{}))
	cfg.Metrics = NewMetrics(reg)
	start(t, cfg, &fakeBackend{})
	good := []wire.GrantEntry{{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}}
	rev := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, good)
	api.waitReport(t, "for the good revision", revision(rev))
	bad := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, append(good, wire.GrantEntry{Source: "203.0.113.300/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}))
	api.waitReport(t, "with the malformed revision's error", func(x wire.AgentReport) bool { return x.Revision == bad && x.Error != "" })

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, label ...string) float64 {
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if len(label) == 2 && !hasLabel(m, label[0], label[1]) {
					continue
				}
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		t.Errorf("no %s %v", name, label)
		return -1
	}
	if ok := value("jitgate_agent_applies_total", "result", "ok"); ok < 1 {
		t.Errorf("applies ok = %v, want at least 1 (revision %d)", ok, rev)
	}
	if n := value("jitgate_agent_applies_total", "result", "error"); n < 1 {
		t.Errorf("applies error = %v, want at least 1", n)
	}
	if got := value("jitgate_agent_applied_revision"); got != float64(rev) {
		t.Errorf("applied revision = %v, want %d (the failed one is not applied)", got, rev)
	}
	if got := value("jitgate_agent_grant_elements"); got != 1 {
		t.Errorf("grant elements = %v, want 1", got)
	}
	if got := value("jitgate_agent_last_apply_success_timestamp_seconds"); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last apply timestamp = %v", got)
	}
	if v := value("jitgate_build_info"); v != 1 {
		t.Errorf("jitgate_build_info = %v", v)
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
