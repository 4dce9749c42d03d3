package api

import (
	"net/netip"
	"sync"
	"time"
)

// failureLimiter limits failed logins per source: a token bucket per key that
// holds burst tokens and regains one every per. Each failure takes a token;
// a source with none left is refused (429) until one comes back. Successes
// cost nothing. It takes now as an argument, so tests need no clock. A nil
// limiter limits nothing.
//
// A bucket is kept as one time (as in GCRA): when it will be full again.
// Each failure moves that time per later; a source may try while it lies
// at most (burst-1)*per ahead. Exact integer arithmetic, no float drift.
type failureLimiter struct {
	burst int
	per   time.Duration
	// maxKeys bounds memory: beyond it, full buckets (which limit nothing)
	// are dropped, and if that is not enough the oldest entry goes.
	maxKeys int

	mu   sync.Mutex
	full map[string]time.Time // by key: when its bucket is full again
}

func newFailureLimiter(burst int, per time.Duration) *failureLimiter {
	return &failureLimiter{burst: burst, per: per, maxKeys: 100_000, full: map[string]time.Time{}}
}

// Wait returns how long key must wait before its next attempt; 0 means it
// may try now.
func (l *failureLimiter) Wait(key string, now time.Time) time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.full[key]
	if !ok {
		return 0
	}
	return max(t.Sub(now)-time.Duration(l.burst-1)*l.per, 0)
}

// Fail records a failed attempt of key.
func (l *failureLimiter) Fail(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.full[key]
	if !ok && len(l.full) >= l.maxKeys {
		l.prune(now)
	}
	// A failure while refused still counts, but the bucket holds no more
	// than burst failures' worth.
	next := later(t, now).Add(l.per)
	if cap := now.Add(time.Duration(l.burst) * l.per); next.After(cap) {
		next = cap
	}
	l.full[key] = next
}

// prune drops full buckets, then (under a flood of sources) the oldest.
func (l *failureLimiter) prune(now time.Time) {
	var oldestKey string
	var oldest time.Time
	for k, t := range l.full {
		if !t.After(now) {
			delete(l.full, k)
			continue
		}
		if oldestKey == "" || t.Before(oldest) {
			oldestKey, oldest = k, t
		}
	}
	if len(l.full) >= l.maxKeys {
		delete(l.full, oldestKey)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sourceKey is the limiter's key for a client address: the address for
// IPv4, its /64 for IPv6 (one host commonly holds a whole /64).
func sourceKey(addr netip.Addr) string {
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
