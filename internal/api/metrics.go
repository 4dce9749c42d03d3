package api

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the server's Prometheus instruments.
type Metrics struct {
	Requests     *prometheus.CounterVec
	GrantLatency prometheus.Histogram
	ApplySeconds prometheus.Histogram
}

// NewMetrics registers the instruments on reg. activeGrants and
// agentsConnected are read at scrape time.
func NewMetrics(reg prometheus.Registerer, activeGrants, agentsConnected func() float64) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_requests_total", Help: "Access requests by outcome (created, refused, invalid, error).",
		}, []string{"outcome"}),
		GrantLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jitgate_grant_latency_seconds",
			Help:    "Time from an access request to its agent confirming the grant is in the kernel.",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		ApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jitgate_agent_apply_seconds",
			Help:    "Time agents take to apply a desired state to the kernel, as they report it.",
			Buckets: []float64{.0001, .0005, .001, .002, .005, .01, .025, .05, .1, .5, 1},
		}),
	}
	reg.MustRegister(m.Requests, m.GrantLatency, m.ApplySeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jitgate_active_grants", Help: "Requests currently active."}, activeGrants),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jitgate_agents_connected", Help: "Agents with an open connection or recent contact."}, agentsConnected),
	)
	for _, o := range []string{"created", "refused", "invalid", "error"} {
		m.Requests.WithLabelValues(o)
	}
	return m
}
