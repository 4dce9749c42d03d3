// Package notify delivers webhook notifications. The store writes each
// notification to an outbox in the same transaction as the change it
// reports; a Deliverer claims the due rows, POSTs them, and records the
// outcome, retrying with exponential backoff. Delivery is at least once:
// a receiver de-duplicates on the webhook-id header. Requests are signed
// the Standard Webhooks way (webhook-id, webhook-timestamp,
// webhook-signature over id, timestamp and body), so a captured delivery
// cannot be replayed later with a fresh timestamp.
//
// Receivers are dialled only at public addresses unless the server allows
// private ones (AllowPrivate): the check runs on the address actually
// dialled, after name resolution, so a name that resolves to 127.0.0.1 or
// to a cloud metadata address is refused like the literal. The receiver's
// answer body is never stored or logged: only its status.
//
// Failure semantics: an attempt that fails (error, timeout, status other than
// 2xx, redirects included) is retried after 1 s, 2 s, 4 s … (±20 % jitter,
// at most 5 min apart) until the delivery is 24 h old, then left failed.
// A claimed delivery is leased: if the server stops or crashes mid-attempt,
// it is due again when the lease ends. Each attempt runs in its own
// goroutine, at most PerWebhook (about) at a time per webhook, so a slow or
// dead receiver delays only its own deliveries, and the change that caused
// a notification never waits for it.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// outbox is what the Deliverer needs of the store.
type outbox interface {
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int, skip ...string) ([]store.OutboxItem, error)
	AckOutbox(ctx context.Context, id int64, now time.Time) error
	FailOutbox(ctx context.Context, id int64, errMsg string, next time.Time) error
	NextOutboxAttempt(ctx context.Context) (time.Time, error)
}

// Options tune a Deliverer; zero fields take the defaults.
type Options struct {
	// Timeout bounds one attempt (default 10 s).
	Timeout time.Duration
	// Lease is how long a claimed delivery is not due again (default three
	// times Timeout: the attempt and the recording of its outcome).
	Lease time.Duration
	// MinBackoff and MaxBackoff bound the wait before a retry (default 1 s
	// and 5 min); it doubles with each failed attempt.
	MinBackoff, MaxBackoff time.Duration
	// GiveUpAfter is the age of a delivery after which a failed attempt is
	// the last (default 24 h).
	GiveUpAfter time.Duration
	// Poll is the longest the Deliverer sleeps without a wake-up (default
	// 2 s): events committed without one (Wake) wait at most that long.
	Poll time.Duration
	// PerWebhook bounds the attempts in flight to one webhook (default 4).
	PerWebhook int
	// Client sends the requests (default: one that follows no redirects
	// and dials only addresses CheckAddr allows).
	Client *http.Client
	// AllowPrivate lets the default client dial loopback, link-local,
	// private and other non-public addresses (jitgate server
	// --webhook-allow-private).
	AllowPrivate bool
	Logger       *slog.Logger
	Now          func() time.Time
	// Jitter returns a number in [0, 1) (default math/rand/v2.Float64);
	// 0.5 gives the backoff without jitter.
	Jitter func() float64
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Timeout, 10*time.Second)
	def(&o.Lease, 3*o.Timeout)
	def(&o.MinBackoff, time.Second)
	def(&o.MaxBackoff, 5*time.Minute)
	def(&o.GiveUpAfter, 24*time.Hour)
	def(&o.Poll, 2*time.Second)
	if o.PerWebhook <= 0 {
		o.PerWebhook = 4
	}
	if o.Client == nil {
		o.Client = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     guardedTransport(o.AllowPrivate),
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	return o
}

// Deliverer sends the outbox's due deliveries.
type Deliverer struct {
	st   outbox
	o    Options
	wake chan struct{}

	mu   sync.Mutex
	busy map[string]int // attempts in flight by webhook id
}

// New returns a Deliverer of st's outbox; Run starts it.
func New(st outbox, o Options) *Deliverer {
	return &Deliverer{st: st, o: o.withDefaults(), wake: make(chan struct{}, 1), busy: map[string]int{}}
}

// Wake makes the Deliverer look for due deliveries now (call it after a
// commit). It never blocks.
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is cancelled, then waits for the attempts in flight
// (cancelled with ctx; they are due again at once on the next start).
func (d *Deliverer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		d.claim(ctx, &wg)
		now := d.o.Now()
		sleep := d.o.Poll
		next, err := d.st.NextOutboxAttempt(ctx)
		if err != nil && ctx.Err() == nil {
			d.o.Logger.Error("finding the next webhook delivery", "err", err)
		}
		// A delivery due already belongs to a busy webhook: the attempt
		// that frees it wakes us.
		if next.After(now) {
			sleep = min(next.Sub(now), sleep)
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// claim claims the due deliveries of the webhooks not at their limit and
// starts an attempt for each.
func (d *Deliverer) claim(ctx context.Context, wg *sync.WaitGroup) {
	d.mu.Lock()
	var skip []string
	for w, n := range d.busy {
		if n >= d.o.PerWebhook {
			skip = append(skip, w)
		}
	}
	d.mu.Unlock()
	items, err := d.st.ClaimOutbox(ctx, d.o.Now(), d.o.Lease, d.o.PerWebhook, skip...)
	if err != nil {
		if ctx.Err() == nil {
			d.o.Logger.Error("claiming webhook deliveries", "err", err)
		}
		return
	}
	for _, it := range items {
		d.mu.Lock()
		d.busy[it.WebhookID]++
		d.mu.Unlock()
		wg.Go(func() {
			d.attempt(ctx, it)
			d.mu.Lock()
			if d.busy[it.WebhookID]--; d.busy[it.WebhookID] <= 0 {
				delete(d.busy, it.WebhookID)
			}
			d.mu.Unlock()
			d.Wake()
		})
	}
}

// attempt sends one delivery and records the outcome.
func (d *Deliverer) attempt(ctx context.Context, it store.OutboxItem) {
	err := d.send(ctx, it)
	now := d.o.Now()
	// The outcome is recorded even when ctx ends meanwhile; Run returns
	// (and the store may close) only after this.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	log := d.o.Logger.With("webhook", it.WebhookID, "delivery", it.ID, "event", it.Event, "attempt", it.Attempt)
	var next time.Time
	switch {
	case err == nil:
		err = d.st.AckOutbox(rec, it.ID, now)
		if errors.Is(err, store.ErrNotFound) {
			return // the webhook was removed meanwhile
		}
		if err != nil {
			log.Error("recording a webhook delivery", "err", err)
		}
		return
	case ctx.Err() != nil:
		err, next = errors.New("interrupted: the server stopped"), now
	case now.Sub(it.CreatedAt) >= d.o.GiveUpAfter:
		log.Warn("webhook delivery failed; giving up", "err", err, "age", now.Sub(it.CreatedAt).Round(time.Second))
	default:
		next = now.Add(d.backoff(it.Attempt))
		log.Info("webhook delivery failed; will retry", "err", err, "retry_at", next)
	}
	if ferr := d.st.FailOutbox(rec, it.ID, err.Error(), next); ferr != nil {
		log.Error("recording a failed webhook delivery", "err", ferr)
	}
}

// backoff is the wait after the attempt-th failed attempt: MinBackoff
// doubled attempt-1 times, ±20 %, at most MaxBackoff.
func (d *Deliverer) backoff(attempt int) time.Duration {
	b := d.o.MinBackoff
	for i := 1; i < attempt && b < d.o.MaxBackoff; i++ {
		b *= 2
	}
	b = time.Duration(float64(b) * (0.8 + 0.4*d.o.Jitter()))
	return min(b, d.o.MaxBackoff)
}

// Headers of a delivery: the event name, and the three headers of the
// Standard Webhooks scheme (https://www.standardwebhooks.com).
const (
	HeaderEvent     = "X-Jitgate-Event"
	HeaderID        = "webhook-id"        // the delivery's id, the same on every retry
	HeaderTimestamp = "webhook-timestamp" // Unix seconds of this attempt
	HeaderSignature = "webhook-signature" // "v1," + base64 HMAC-SHA256 of "id.timestamp.body"
)

// send makes one attempt: a POST of the body in the webhook's format,
// signed, that succeeds with a 2xx answer within the timeout.
func (d *Deliverer) send(ctx context.Context, it store.OutboxItem) error {
	body, err := Body(it)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, it.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jitgate-webhook/1")
	id, ts := strconv.FormatInt(it.ID, 10), strconv.FormatInt(d.o.Now().Unix(), 10)
	req.Header.Set(HeaderEvent, it.Event)
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(it.Secret, id, ts, body))
	resp, err := d.o.Client.Do(req)
	if err != nil {
		// The URL (whose path may be a secret, as Slack's is) stays out of
		// the message, which is stored and logged.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %s", d.o.Timeout)
		}
		return err
	}
	defer resp.Body.Close()
	// The body is drained (to reuse the connection) but never kept: a
	// receiver, or whoever answers at its address, must not be able to
	// put text into jitgate's database, logs and CLI.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drained for reuse; the status decides
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return nil
}

// Sign is the webhook-signature of one attempt: "v1," and the base64
// HMAC-SHA256, keyed with the webhook's secret (its bytes as given or
// generated), of "id.timestamp.body". Covering the timestamp lets a receiver
// refuse an old delivery replayed as new.
func Sign(secret, id, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
