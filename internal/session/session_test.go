package session_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/session"
)

var t0 = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

func live() session.Session {
	return session.Session{ID: "s-1", Target: "web-01", Principal: "user:alice", RequestID: "r-1", Protocol: "tcp", Port: 22,
		StartedAt: t0, Deadline: t0.Add(time.Hour), State: session.Live}
}

func TestEnd(t *testing.T) {
	tests := []struct {
		name    string
		s       session.Session
		reason  session.EndReason
		by      string
		wantErr bool
		wantBy  string
	}{
		{"closed", live(), session.Closed, "", false, ""},
		{"killed by", live(), session.Killed, "user:bob", false, "user:bob"},
		{"killed by nobody", live(), session.Killed, "", true, ""},
		{"by ignored unless killed", live(), session.Revoked, "user:bob", false, ""},
		{"unknown reason", live(), "bored", "", true, ""},
		{"already ended", func() session.Session { s, _ := live().End(session.Closed, "", "", t0); return s }(), session.Killed, "user:bob", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.End(tt.reason, tt.by, "m", t0.Add(time.Minute))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("End = %+v, want an error", got)
				}
				if tt.s.State == session.Ended && (!errors.Is(err, session.ErrEnded) || got.Reason != tt.s.Reason) {
					t.Errorf("ending an ended session: %v, reason %q; want ErrEnded and the first reason kept", err, got.Reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.State != session.Ended || got.Reason != tt.reason || got.EndedBy != tt.wantBy || got.EndedAt == nil || !got.EndedAt.Equal(t0.Add(time.Minute)) {
				t.Errorf("End = %+v", got)
			}
		})
	}
}

func TestReasonAt(t *testing.T) {
	ended, _ := live().End(session.Closed, "", "", t0)
	tests := []struct {
		name      string
		s         session.Session
		now       time.Time
		grantLive bool
		want      session.EndReason
	}{
		{"running", live(), t0.Add(time.Minute), true, ""},
		{"deadline", live(), t0.Add(time.Hour), true, session.GrantExpired},
		{"deadline wins over revoke", live(), t0.Add(time.Hour), false, session.GrantExpired},
		{"revoked", live(), t0.Add(time.Minute), false, session.Revoked},
		{"ended stays", ended, t0.Add(2 * time.Hour), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.ReasonAt(tt.now, tt.grantLive); got != tt.want {
				t.Errorf("ReasonAt = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseEndReason(t *testing.T) {
	for _, r := range session.Reasons {
		if got, err := session.ParseEndReason(string(r)); err != nil || got != r {
			t.Errorf("ParseEndReason(%q) = %q, %v", r, got, err)
		}
	}
	if _, err := session.ParseEndReason("nope"); err == nil {
		t.Error("ParseEndReason(nope): no error")
	}
}

func TestIdleAt(t *testing.T) {
	for _, tt := range []struct {
		idle, since time.Duration
		want        bool
	}{
		{0, time.Hour, false},
		{time.Minute, 59 * time.Second, false},
		{time.Minute, time.Minute, true},
		{time.Minute, 2 * time.Minute, true},
	} {
		if got := session.IdleAt(t0, tt.idle, t0.Add(tt.since)); got != tt.want {
			t.Errorf("IdleAt(idle %s, %s later) = %v, want %v", tt.idle, tt.since, got, tt.want)
		}
	}
}
