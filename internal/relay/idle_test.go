package relay_test

import (
	"bufio"
	"context"
	"io"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRelayStreamEndsWhenIdle: the agent itself ends a relayed stream in
// which no byte moved for its rule's idle timeout plus IdleGrace (from its own desired
// state, with nothing from the server), and leaves a talking one alone
// past the same span.
func TestRelayStreamEndsWhenIdle(t *testing.T) {
	port := testenv.Echo(t)
	ds := desired(port, "bastion")
	ds.Protected[0].IdleTimeout = wire.Duration(time.Second)
	ds.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
	srv, ag := pair(t, func() (wire.DesiredState, bool) { return ds, true }, time.Now)
	st, err := srv.Open(context.Background(), "web-01", relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r := bufio.NewReader(st)
	for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(200 * time.Millisecond) {
		if _, err := st.Write([]byte("ping\n")); err != nil {
			t.Fatalf("a talking stream was ended: %v", err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	}
	if ag.Live() != 1 {
		t.Fatalf("%d live streams while talking, want 1", ag.Live())
	}
	// Silent now: the agent ends it.
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("the idle stream did not end: %v", err)
	}
	for ag.Live() != 0 {
		time.Sleep(time.Millisecond)
	}
}
