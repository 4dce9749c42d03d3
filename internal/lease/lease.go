// Package lease runs singleton jobs: work that must run on exactly one of
// several server replicas sharing a database (the sweeper, webhook
// delivery, pruning). Each job has a lease row in the database; the replica
// holding it runs the job and renews the row every Renew, and a replica
// that dies (or loses the database) stops renewing, so another takes the
// lease over once it expires, within TTL.
//
// Failure semantics, before the happy path:
//   - Exclusivity rests on time. A holder counts its claim from the instant
//     before it asked the database, and stops the job Margin before the
//     claim could expire, so it has stopped before any other replica may
//     take the lease, as long as replicas' clocks differ by less than
//     Margin (NTP keeps them within milliseconds) and the job returns
//     promptly when its context ends.
//   - A renewal that fails (the database is unreachable) is retried every
//     Renew; the job keeps running until its claim runs out, then stops.
//   - A replica that stops cleanly releases its leases, so the others need
//     not wait for them to expire.
//   - Every singleton job is also safe to run twice by itself (compare-and-
//     set transitions, outbox claims): the lease saves the duplicated work
//     and keeps audit and webhooks from racing, it is not what keeps the
//     firewall right (kernel timeouts are).
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// Defaults: a holder renews every second, a claim lasts five, and a holder
// stops its job two seconds before its claim could expire.
const (
	DefaultTTL    = 5 * time.Second
	DefaultRenew  = time.Second
	DefaultMargin = 2 * time.Second
)

// leaseStore is what a runner needs of the store.
type leaseStore interface {
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (store.Lease, bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Config names a job's lease and this replica.
type Config struct {
	// Name is the job's lease ("sweeper", "webhooks", "prune").
	Name string
	// Holder is this replica's id (server.Config.ReplicaID).
	Holder string
	// TTL, Renew and Margin default to DefaultTTL, DefaultRenew and
	// DefaultMargin; Renew must be less than TTL-Margin.
	TTL, Renew, Margin time.Duration
	Logger             *slog.Logger
	// Held, if set, is told when this replica gains (true) or loses
	// (false) the lease: the server sets a metric with it.
	Held func(bool)
}

func (c Config) withDefaults() Config {
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Renew <= 0 {
		c.Renew = DefaultRenew
	}
	if c.Margin <= 0 {
		c.Margin = DefaultMargin
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Held == nil {
		c.Held = func(bool) {}
	}
	return c
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Name == "":
		return fmt.Errorf("lease: name required")
	case c.Holder == "":
		return fmt.Errorf("lease %s: holder required", c.Name)
	case c.Renew >= c.TTL-c.Margin:
		return fmt.Errorf("lease %s: renew (%s) must be shorter than ttl (%s) minus margin (%s)", c.Name, c.Renew, c.TTL, c.Margin)
	}
	return nil
}

// Run runs job while this replica holds the lease, until ctx ends. job gets
// a context that ends when the lease may be lost; it must return soon after
// (Run waits for it before it lets the lease go). A job that returns by
// itself is started again at the next renewal while the lease is held.
func Run(ctx context.Context, st leaseStore, cfg Config, job func(ctx context.Context)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("job", cfg.Name, "replica", cfg.Holder)
	var (
		validUntil time.Time // our claim, less the margin; zero: not held
		stop       context.CancelFunc
		done       chan struct{}
	)
	held := func() bool { return !validUntil.IsZero() }
	// lose stops the job and waits for it.
	lose := func(why string, args ...any) {
		if stop != nil {
			stop()
			<-done
			stop, done = nil, nil
		}
		if held() {
			validUntil = time.Time{}
			log.Warn("singleton lease lost: the job stopped on this replica", append([]any{"why", why}, args...)...)
			cfg.Held(false)
		}
	}
	defer func() {
		wasHeld := held()
		lose("the server is stopping")
		if wasHeld {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Renew)
			defer cancel()
			if err := st.ReleaseLease(rctx, cfg.Name, cfg.Holder); err != nil {
				log.Warn("releasing the lease (another replica takes it when it expires)", "err", err)
			}
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		asked := time.Now()
		// The call must answer before our claim runs out: a database that
		// hangs must not keep the job running past it.
		deadline := asked.Add(cfg.Renew)
		if held() {
			deadline = validUntil
		}
		actx, cancel := context.WithDeadline(ctx, deadline)
		l, ok, err := st.AcquireLease(actx, cfg.Name, cfg.Holder, asked, cfg.TTL)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("renewing the singleton lease", "err", err)
			if held() && !time.Now().Before(validUntil) {
				lose("the lease could not be renewed in time", "err", err)
			}
		case !ok:
			if held() {
				lose("another replica holds it", "holder", l.Holder)
			}
		default:
			if !held() {
				log.Info("singleton lease taken: the job runs on this replica", "expires", l.Expires)
				cfg.Held(true)
			}
			validUntil = asked.Add(cfg.TTL - cfg.Margin)
			if done == nil || closed(done) {
				jctx, cancel := context.WithCancel(ctx)
				stop, done = cancel, make(chan struct{})
				go func(done chan struct{}) { defer close(done); job(jctx) }(done)
			}
		}
		next := cfg.Renew
		if held() {
			next = min(next, max(time.Until(validUntil), 0))
		}
		t.Reset(next)
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
