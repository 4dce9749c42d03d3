package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// feedChannel is the PostgreSQL channel of the change feed (the triggers of
// migrations_postgres/0019_replicas.sql notify it).
const feedChannel = "jitgate_changes"

// FeedApplicationName is the application_name of the listening connection.
const FeedApplicationName = "jitgate change feed"

// originParam is the connection setting that names the replica (the store
// handle) writing: the triggers put it in each notification.
const originParam = "jitgate.origin"

// pgListener keeps one connection per store handle listening on the
// change feed's channel, and publishes what the other replicas committed
// to this handle's subscribers.
//
// Failure semantics: a lost connection is reopened with backoff (100 ms
// doubling to 5 s). Notifications sent while no connection listened are
// lost, so after each (re)connection every target is published once:
// waiters re-read their state and miss nothing, at the cost of one read
// each. While the listener is down, a long-poll on this replica still ends
// at its timeout and re-reads; nothing waits forever.
type pgListener struct {
	s      *Store
	url    string
	origin string
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	listening bool
	connects  int
}

// startListener begins listening for s (a PostgreSQL store opened at url).
func (s *Store) startListener(url, origin string) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &pgListener{s: s, url: url, origin: origin, log: slog.Default().With("component", "change feed"), cancel: cancel, done: make(chan struct{})}
	s.listener = l
	go func() { defer close(l.done); l.run(ctx) }()
}

// stop ends the listener and waits for it.
func (l *pgListener) stop() {
	l.cancel()
	<-l.done
}

func (l *pgListener) run(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		err := l.listen(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return
		}
		l.setListening(false)
		l.log.Warn("the change feed's connection to PostgreSQL was lost; reconnecting", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listen connects, listens, wakes everybody (notifications may have been
// missed before), then publishes each notification from another origin
// until the connection fails.
func (l *pgListener) listen(ctx context.Context, connected func()) error {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return fmt.Errorf("parsing the database URL: %w", err)
	}
	// Named, for pg_stat_activity (and for tests that cut it).
	cfg.RuntimeParams["application_name"] = FeedApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+feedChannel); err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	connected()
	l.setListening(true)
	if err := l.wakeAll(ctx); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for notifications: %w", err)
		}
		origin, target, ok := strings.Cut(n.Payload, " ")
		if !ok || origin == l.origin || target == "" {
			continue
		}
		l.s.changed(target)
	}
}

// wakeAll publishes every target.
func (l *pgListener) wakeAll(ctx context.Context) error {
	rows, err := l.s.db.QueryContext(ctx, `SELECT name FROM targets`)
	if err != nil {
		return fmt.Errorf("listing targets to wake: %w", err)
	}
	var all []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("listing targets to wake: %w", err)
		}
		all = append(all, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing targets to wake: %w", err)
	}
	l.s.feed.publish(all...)
	return nil
}

func (l *pgListener) setListening(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.listening = on
	if on {
		l.connects++
	}
}

// FeedListening reports whether the store hears the changes other replicas
// commit: always for SQLite (there are none), and for PostgreSQL while its
// listening connection is up. connects counts that connection's
// (re)connections (0 for SQLite).
func (s *Store) FeedListening() (listening bool, connects int) {
	if s.listener == nil {
		return true, 0
	}
	s.listener.mu.Lock()
	defer s.listener.mu.Unlock()
	return s.listener.listening, s.listener.connects
}
