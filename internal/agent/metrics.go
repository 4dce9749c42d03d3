package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/buildinfo"
)

// Metrics are the agent's own Prometheus instruments, served on the opt-in
// --metrics-address (node_exporter style: scraped on the host, no token).
// The server's /metrics shows what agents report (apply errors, last
// seen); these show the agent's side even while it cannot reach the
// server.
type Metrics struct {
	applies      *prometheus.CounterVec
	applySeconds prometheus.Histogram
	revision     prometheus.Gauge
	lastApply    prometheus.Gauge
	elements     prometheus.Gauge
	reportErrors prometheus.Counter
}

// NewMetrics registers the agent's instruments (and jitgate_build_info) on
// reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_agent_applies_total", Help: "Desired states this agent applied to the kernel, by result (ok, error).",
		}, []string{"result"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jitgate_agent_apply_duration_seconds", Help: "Time this agent took to apply a desired state (full or delta).",
			Buckets: []float64{.0001, .0005, .001, .002, .005, .01, .025, .05, .1, .5, 1, 5},
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jitgate_agent_applied_revision", Help: "The revision of the desired state last applied successfully.",
		}),
		lastApply: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jitgate_agent_last_apply_success_timestamp_seconds", Help: "When the last successful apply finished (Unix time; 0: none yet).",
		}),
		elements: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jitgate_agent_grant_elements", Help: "Grant elements in the kernel's sets after the last successful apply.",
		}),
		reportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jitgate_agent_report_errors_total", Help: "Reports to the server that could not be delivered (retried).",
		}),
	}
	bi := buildinfo.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jitgate_build_info", Help: "Always 1; the labels say which build of jitgate this agent runs.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(bi.Version, bi.Commit, bi.Go).Set(1)
	reg.MustRegister(m.applies, m.applySeconds, m.revision, m.lastApply, m.elements, m.reportErrors, build)
	m.applies.WithLabelValues("ok")
	m.applies.WithLabelValues("error")
	return m
}

// applied records the outcome of one apply; m may be nil (no metrics).
func (m *Metrics) applied(rev int64, took time.Duration, elements int, now time.Time, err error) {
	if m == nil {
		return
	}
	m.applySeconds.Observe(took.Seconds())
	if err != nil {
		m.applies.WithLabelValues("error").Inc()
		return
	}
	m.applies.WithLabelValues("ok").Inc()
	m.revision.Set(float64(rev))
	m.lastApply.Set(float64(now.UnixMilli()) / 1000)
	m.elements.Set(float64(elements))
}

// reportFailed counts an undelivered report; m may be nil.
func (m *Metrics) reportFailed() {
	if m != nil {
		m.reportErrors.Inc()
	}
}
