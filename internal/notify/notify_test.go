package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

const secret = "test-secret-0123456789"

var quiet = slog.New(slog.DiscardHandler)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), path, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func addHook(t *testing.T, st *store.Store, url, format string) string {
	t.Helper()
	w, err := st.CreateWebhook(context.Background(), store.Actor{Name: "admin"}, store.Webhook{URL: url, Format: format, Secret: secret}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return w.ID
}

// emit writes n reported events and returns their audit ids.
func emit(t *testing.T, st *store.Store, n int) map[int64]bool {
	t.Helper()
	ctx := context.Background()
	before, err := st.ListAudit(ctx, store.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	if len(before) > 0 {
		last = before[len(before)-1].ID
	}
	actions := []audit.Action{audit.RequestExpired, audit.RequestRevoked, audit.RequestDenied}
	for i := range n {
		if err := st.Audit(ctx, audit.Event{At: time.Now(), Actor: audit.System, Action: actions[i%len(actions)], Target: "web-01",
			Reason: "event " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := st.ListAudit(ctx, store.AuditFilter{AfterID: last, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]bool{}
	for _, e := range after {
		ids[e.ID] = true
	}
	if len(ids) != n {
		t.Fatalf("emitted %d events, found %d", n, len(ids))
	}
	return ids
}

// receiver is a webhook endpoint that misbehaves on purpose: it answers 500
// to the first fail requests, then stalls the next stall requests for
// stallFor (after which it processes them: the sender has given up, so they
// are retried and arrive twice), then works.
type receiver struct {
	t        *testing.T
	fail     int
	stall    int
	stallFor time.Duration
	dead     bool // never answers (until the sender hangs up)

	mu       sync.Mutex
	outcomes map[string][]string // by webhook-id: "500", "stall", "200"
	events   map[string]int64    // by webhook-id: the payload's event id
	problems []string
}

func newReceiver(t *testing.T) *receiver {
	return &receiver{t: t, outcomes: map[string][]string{}, events: map[string]int64{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	delivery := r.Header.Get("webhook-id")
	var p wire.WebhookPayload
	rc.mu.Lock()
	if !verify(r.Header, body) {
		rc.problems = append(rc.problems, "delivery "+delivery+": bad signature "+r.Header.Get("webhook-signature"))
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Event != r.Header.Get("X-Jitgate-Event") || delivery == "" {
		rc.problems = append(rc.problems, "delivery "+delivery+": bad body or headers: "+string(body))
	}
	if ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64); err != nil || time.Since(time.Unix(ts, 0)) > time.Minute {
		rc.problems = append(rc.problems, "delivery "+delivery+": bad timestamp")
	}
	outcome := "200"
	switch {
	case rc.dead:
		outcome = "dead"
	case rc.fail > 0:
		rc.fail--
		outcome = "500"
	case rc.stall > 0:
		rc.stall--
		outcome = "stall"
	}
	rc.mu.Unlock()
	switch outcome {
	case "dead":
		<-r.Context().Done()
		return
	case "500":
		http.Error(w, "not now", http.StatusInternalServerError)
	case "stall":
		time.Sleep(rc.stallFor)
	}
	rc.mu.Lock()
	rc.outcomes[delivery] = append(rc.outcomes[delivery], outcome)
	rc.events[delivery] = p.ID
	rc.mu.Unlock()
}

// check verifies that every event in want was processed, signatures held,
// and only retried deliveries arrived more than once.
func (rc *receiver) check(want map[int64]bool) {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, p := range rc.problems {
		rc.t.Error(p)
	}
	got := map[int64]bool{}
	for d, outs := range rc.outcomes {
		processed, ok, retried := 0, 0, false
		for _, o := range outs {
			switch o {
			case "200":
				processed++
				ok++
			case "stall":
				processed++
				retried = true
			}
		}
		if ok != 1 {
			rc.t.Errorf("delivery %s answered 200 %d times (%v), want once", d, ok, outs)
		}
		if processed > 1 && !retried {
			rc.t.Errorf("delivery %s processed %d times without a failed attempt (%v)", d, processed, outs)
		}
		got[rc.events[d]] = true
	}
	for id := range want {
		if !got[id] {
			rc.t.Errorf("event %d never arrived", id)
		}
	}
	if len(got) != len(want) {
		rc.t.Errorf("%d events arrived, want %d", len(got), len(want))
	}
}

// fast are options for real-time tests: short timeouts and backoff, and
// loopback receivers allowed.
func fast() notify.Options {
	return notify.Options{Timeout: 300 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Poll: 50 * time.Millisecond, Logger: quiet, AllowPrivate: true}
}

// verify checks a delivery the way docs/webhooks.md tells receivers to:
// HMAC-SHA256 of "id.timestamp.body" keyed with the secret, base64, after
// "v1," in webhook-signature (which may list several, space-separated).
func verify(h http.Header, body []byte) bool {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

// run starts d and returns a function that stops it and waits.
func run(d *notify.Deliverer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func waitDelivered(t *testing.T, st *store.Store, hook string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ds, err := st.ListDeliveries(context.Background(), hook, 1000)
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, d := range ds {
			if d.State == store.DeliveryDelivered {
				done++
			}
		}
		if done == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries to %s done after %s: %+v", done, n, hook, within, ds)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFlakyReceiver: failures and a stall are retried until every event
// arrived; nothing is lost and only retried deliveries repeat.
func TestFlakyReceiver(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
	defer st.Close()
	rc := newReceiver(t)
	rc.fail, rc.stall, rc.stallFor = 5, 1, time.Second
	srv := httptest.NewServer(rc)
	defer srv.Close()
	hook := addHook(t, st, srv.URL+"/hook", store.FormatGeneric)
	want := emit(t, st, 20)

	stop := run(notify.New(st, fast()))
	defer stop()
	waitDelivered(t, st, hook, 20, 10*time.Second)
	stop()
	rc.check(want)
	ds, _ := st.ListDeliveries(context.Background(), hook, 1000)
	retried := 0
	for _, d := range ds {
		if d.Attempts > 1 {
			retried++
			if d.LastError == "" {
				t.Errorf("delivery %d took %d attempts but shows no error", d.ID, d.Attempts)
			}
		}
	}
	if retried < 2 {
		t.Errorf("%d deliveries were retried, want at least 2 (5 failures and a stall)", retried)
	}
}

// TestDeadReceiverDoesNotDelayOthers: a receiver that never answers holds
// its own deliveries only.
func TestDeadReceiverDoesNotDelayOthers(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
	defer st.Close()
	dead, healthy := newReceiver(t), newReceiver(t)
	dead.dead = true
	deadSrv, healthySrv := httptest.NewServer(dead), httptest.NewServer(healthy)
	defer deadSrv.Close()
	defer healthySrv.Close()
	addHook(t, st, deadSrv.URL, store.FormatGeneric)
	good := addHook(t, st, healthySrv.URL, store.FormatGeneric)
	o := fast()
	o.Timeout, o.PerWebhook = 10*time.Second, 2
	stop := run(notify.New(st, o))
	defer stop()
	want := emit(t, st, 30)
	start := time.Now()
	waitDelivered(t, st, good, 30, 5*time.Second)
	if took := time.Since(start); took > o.Timeout/2 {
		t.Errorf("the healthy receiver waited %s, the dead one's timeout is %s", took, o.Timeout)
	}
	stop() // cancels the attempts stuck on the dead receiver
	healthy.check(want)
}

// TestRestart: deliveries left by a stopped deliverer, and by one that
// crashed holding leases, are delivered by the next one on the same
// database.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	st := openStore(t, path)
	rc := newReceiver(t)
	rc.fail = 1 << 30
	srv := httptest.NewServer(rc)
	defer srv.Close()
	hook := addHook(t, st, srv.URL, store.FormatGeneric)
	want := emit(t, st, 10)
	stop := run(notify.New(st, fast()))
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds, _ := st.ListDeliveries(context.Background(), hook, 1000)
		tried := 0
		for _, d := range ds {
			if d.Attempts > 0 {
				tried++
			}
		}
		if tried == 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	// A crashed deliverer: claims, never acks.
	for id := range emit(t, st, 5) {
		want[id] = true
	}
	if items, err := st.ClaimOutbox(context.Background(), time.Now(), 500*time.Millisecond, 100); err != nil || len(items) == 0 {
		t.Fatalf("ClaimOutbox = %d items, %v", len(items), err)
	}
	st.Close()

	st = openStore(t, path)
	defer st.Close()
	rc.mu.Lock()
	rc.fail = 0
	rc.outcomes = map[string][]string{} // count from the restart on
	rc.mu.Unlock()
	stop = run(notify.New(st, fast()))
	defer stop()
	waitDelivered(t, st, hook, 15, 10*time.Second)
	stop()
	rc.check(want)
}

// TestBackoffAndGiveUp: in a synctest bubble (no sockets: the transport is
// a function), failed attempts are retried after 1 s, 2 s, 4 s … at most
// 5 min apart, and the delivery is given up once a day old.
func TestBackoffAndGiveUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
		defer st.Close()
		hook := addHook(t, st, "https://hooks.example.com/x", store.FormatGeneric)
		var (
			mu       sync.Mutex
			attempts []time.Duration
		)
		start := time.Now()
		transport := roundTripper(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			attempts = append(attempts, time.Since(start))
			mu.Unlock()
			return &http.Response{StatusCode: http.StatusBadGateway, Status: "502 Bad Gateway", Body: io.NopCloser(strings.NewReader("upstream down")), Request: r}, nil
		})
		// A long poll: the loop sleeps exactly until each retry is due.
		d := notify.New(st, notify.Options{Client: &http.Client{Transport: transport}, Jitter: func() float64 { return 0.5 }, Poll: time.Hour, Logger: quiet})
		emit(t, st, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		time.Sleep(25 * time.Hour)
		cancel()
		<-done

		var want []time.Duration
		for at, wait := time.Duration(0), time.Second; ; wait = min(2*wait, 5*time.Minute) {
			want = append(want, at)
			if at >= 24*time.Hour {
				break
			}
			at += wait
		}
		mu.Lock()
		defer mu.Unlock()
		if len(attempts) != len(want) {
			t.Fatalf("%d attempts, want %d", len(attempts), len(want))
		}
		for i := range want {
			if attempts[i] != want[i] {
				t.Errorf("attempt %d at +%s, want +%s", i+1, attempts[i], want[i])
			}
		}
		ds, err := st.ListDeliveries(context.Background(), hook, 10)
		if err != nil || len(ds) != 1 || ds[0].State != store.DeliveryFailed || ds[0].Attempts != len(want) ||
			ds[0].LastError != "the receiver answered 502 Bad Gateway" {
			t.Errorf("deliveries = %+v, %v; want one failed after %d attempts", ds, err, len(want))
		}
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
