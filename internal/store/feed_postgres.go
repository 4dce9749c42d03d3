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
// The first connection is made before it returns, so every commit after
// the store opened is heard; if it cannot be made, the listener keeps
// trying in the background (and wakes everybody when it succeeds).
func (s *Store) startListener(ctx context.Context, url, origin string) {
	lctx, cancel := context.WithCancel(context.Background())
	l := &pgListener{s: s, url: url, origin: origin, log: slog.Default().With("component", "change feed"), cancel: cancel, done: make(chan struct{})}
	s.listener = l
	conn, err := l.connect(ctx)
	if err != nil {
		l.log.Warn("the change feed cannot listen yet; retrying", "err", err)
	}
	go func() { defer close(l.done); l.run(lctx, conn) }()
}

// stop ends the listener and waits for it.
func (l *pgListener) stop() {
	l.cancel()
	<-l.done
}

// run serves first (nil if the first connection failed), then reconnects
// whenever the connection is lost.
func (l *pgListener) run(ctx context.Context, first *pgx.Conn) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	conn := first
	for ctx.Err() == nil {
		var err error
		if conn == nil {
			conn, err = l.connect(ctx)
			if err == nil {
				// Notifications sent while nobody listened are lost.
				err = l.wakeAll(ctx)
			}
		}
		if err == nil {
			backoff = minBackoff
			err = l.serve(ctx, conn)
		}
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
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

// connect opens a connection and listens on the feed's channel.
func (l *pgListener) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	// Named, for pg_stat_activity (and for tests that cut it).
	cfg.RuntimeParams["application_name"] = FeedApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+feedChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listening: %w", err)
	}
	l.setListening(true)
	return conn, nil
}

// serve publishes each notification from another origin until the
// connection fails.
func (l *pgListener) serve(ctx context.Context, conn *pgx.Conn) error {
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
