package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/buildinfo"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/store"
)

// Metrics are the server's Prometheus instruments.
type Metrics struct {
	Requests     *prometheus.CounterVec
	GrantLatency prometheus.Histogram
	ApplySeconds prometheus.Histogram
	// StoreWriteErrors counts write transactions that failed for a storage
	// reason, by cause (disk_full, io_error); the server feeds it from
	// store.OnWriteError.
	StoreWriteErrors *prometheus.CounterVec
	// ApplyErrors counts the agent reports that carried an apply error,
	// per target: a target whose agent cannot enforce shows here first.
	ApplyErrors *prometheus.CounterVec
	// HTTPRequests and HTTPDuration count and time API calls by route
	// pattern (the mux's, such as "GET /api/v1/requests/{id}", never the raw
	// path, so the series stay bounded whatever clients send), method and
	// status code.
	HTTPRequests *prometheus.CounterVec
	HTTPDuration *prometheus.HistogramVec
}

// NewMetrics registers the instruments on reg. activeGrants and
// agentsConnected are read at scrape time.
func NewMetrics(reg prometheus.Registerer, activeGrants, agentsConnected func() float64) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_requests_total", Help: "Access requests by outcome (created, refused, limited, invalid, error).",
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
		StoreWriteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_store_write_errors_total", Help: "Database writes that failed for a storage reason, by cause (disk_full, io_error); nothing of them was recorded.",
		}, []string{"cause"}),
	}
	m.ApplyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jitgate_agent_apply_errors_total", Help: "Agent reports that said applying the desired state failed, by target.",
	}, []string{"target"})
	m.HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jitgate_http_requests_total", Help: "HTTP requests to the API by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	m.HTTPDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "jitgate_http_request_duration_seconds", Help: "Time to answer HTTP requests to the API, by route pattern and method (long-polls and tunnels included: read them by route).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route", "method"})
	bi := buildinfo.Get()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jitgate_build_info", Help: "Always 1; the labels say which build of jitgate this server runs.",
	}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(bi.Version, bi.Commit, bi.Go).Set(1)
	reg.MustRegister(m.Requests, m.GrantLatency, m.ApplySeconds, m.StoreWriteErrors, m.ApplyErrors, m.HTTPRequests, m.HTTPDuration, buildInfo,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jitgate_active_grants", Help: "Requests currently active."}, activeGrants),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jitgate_agents_connected", Help: "Agents with an open connection or recent contact."}, agentsConnected),
	)
	for _, o := range []string{"created", "refused", "limited", "invalid", "error"} {
		m.Requests.WithLabelValues(o)
	}
	for _, c := range []string{store.WriteErrDiskFull, store.WriteErrIO} {
		m.StoreWriteErrors.WithLabelValues(c)
	}
	return m
}

// blockedCollector exposes the kernel's blocked-attempt counters as agents
// last reported them, read from the store at scrape time.
type blockedCollector struct {
	st                *store.Store
	packets, newConns *prometheus.Desc
}

func newBlockedCollector(st *store.Store) *blockedCollector {
	labels := []string{"gate", "destination", "protocol", "port"}
	return &blockedCollector{st: st,
		packets:  prometheus.NewDesc("jitgate_blocked_packets_total", "Packets the gate dropped on a protected port (kernel counter, as last reported).", labels, nil),
		newConns: prometheus.NewDesc("jitgate_blocked_connections_total", "New connections the gate dropped on a protected port (kernel counter, as last reported).", labels, nil),
	}
}

func (c *blockedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.packets; ch <- c.newConns }

func (c *blockedCollector) Collect(ch chan<- prometheus.Metric) {
	rows, err := c.st.AllBlocked(context.Background())
	if err != nil {
		return
	}
	for _, r := range rows {
		l := []string{r.Target, r.Destination, r.Protocol, strconv.Itoa(int(r.Port))}
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(r.Packets), l...)
		ch <- prometheus.MustNewConstMetric(c.newConns, prometheus.CounterValue, float64(r.Connections), l...)
	}
}

// writeBatchCollector exposes the store's group-commit batch sizes
// (operations per committed write transaction) as a histogram read at
// scrape time: rate(_sum)/rate(_count) is the mean batch, and _count the
// commits (each one fsync). Under load the writer gathers writes into
// bigger batches (store.gatherDelay); this shows whether it does.
type writeBatchCollector struct {
	st   *store.Store
	desc *prometheus.Desc
}

func newWriteBatchCollector(st *store.Store) *writeBatchCollector {
	return &writeBatchCollector{st: st, desc: prometheus.NewDesc("jitgate_store_write_batch_size",
		"Operations per committed database write transaction (group commit: writes arriving together share one transaction and one fsync); _count is the commits.", nil, nil)}
}

func (c *writeBatchCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *writeBatchCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.st.WriteBatchSizes()
	ch <- prometheus.MustNewConstHistogram(c.desc, uint64(b.Commits), float64(b.Ops), b.Buckets)
}

// syncCollector exposes the durations of the store's fsyncs of its log
// (SQLite with pipelined durability: the syncer) as a histogram: a write
// is answered only after the sync that covers it, so this is the disk's
// share of every write's latency. Nothing without a syncer.
type syncCollector struct {
	st   *store.Store
	desc *prometheus.Desc
}

func newSyncCollector(st *store.Store) *syncCollector {
	return &syncCollector{st: st, desc: prometheus.NewDesc("jitgate_store_sync_duration_seconds",
		"Duration of the fsyncs that make the database's committed writes durable before they are reported (SQLite; one sync covers every commit made before it began).", nil, nil)}
}

func (c *syncCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *syncCollector) Collect(ch chan<- prometheus.Metric) {
	if st, ok := c.st.SyncStats(); ok {
		ch <- prometheus.MustNewConstHistogram(c.desc, st.Count, st.Seconds, st.Buckets)
	}
}

// removalCollector exposes how many removals their agents have not
// confirmed yet, read from the store at scrape time: revoked (denied,
// failed) requests whose grants may still be open until their kernel
// deadline, and removed policies whose ports may still be closed.
type removalCollector struct {
	st                 *store.Store
	now                func() time.Time
	requests, policies *prometheus.Desc
}

func newRemovalCollector(st *store.Store, now func() time.Time) *removalCollector {
	return &removalCollector{st: st, now: now,
		requests: prometheus.NewDesc("jitgate_unconfirmed_revocations",
			"Ended requests (revoked, denied, failed) whose agent has not yet confirmed that their grants left the kernel, and whose kernel deadline has not passed.", nil, nil),
		policies: prometheus.NewDesc("jitgate_unconfirmed_policy_removals",
			"Targets whose policy was removed but whose agent has not yet confirmed applying that (their ports may still be closed).", nil, nil),
	}
}

func (c *removalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.requests; ch <- c.policies }

func (c *removalCollector) Collect(ch chan<- prometheus.Metric) {
	reqs, pols, err := c.st.UnconfirmedRemovals(context.Background(), c.now())
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.requests, prometheus.GaugeValue, float64(reqs))
	ch <- prometheus.MustNewConstMetric(c.policies, prometheus.GaugeValue, float64(pols))
}

// instrument counts and times each API call under its route pattern, which
// the mux records on the request it is given (r.Pattern): the mux must be
// next, with no handler between that copies the request. Calls no route
// matched count under "/". The pattern also reaches the server's request
// log through httpedge.
func (m *Metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &codeRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			route := r.Pattern
			if route == "" {
				route = "/"
			}
			httpedge.SetRoute(r.Context(), route)
			if m == nil {
				return
			}
			method := r.Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
			default:
				method = "other" // the method is the client's to choose: keep the label set bounded
			}
			m.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(rec.code)).Inc()
			m.HTTPDuration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

// codeRecorder remembers the status code written.
type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController (flushes, deadlines) and WebSocket
// upgrades reach the connection.
func (c *codeRecorder) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Flush lets long-polls flush through the recorder.
func (c *codeRecorder) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// presenceCollector exposes when each agent was last in contact with this
// server (an open long-poll counts as now), read at scrape time.
type presenceCollector struct {
	p    *Presence
	desc *prometheus.Desc
}

func newPresenceCollector(p *Presence) *presenceCollector {
	return &presenceCollector{p: p, desc: prometheus.NewDesc("jitgate_agent_last_seen_timestamp_seconds",
		"When each target's agent was last in contact with this server (Unix time; now while a long-poll is open).", []string{"target"}, nil)}
}

func (c *presenceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *presenceCollector) Collect(ch chan<- prometheus.Metric) {
	for target, at := range c.p.LastSeen(time.Now()) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(at.UnixMilli())/1000, target)
	}
}
