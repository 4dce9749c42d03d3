package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// replica is a real HTTP server standing for one jitgate replica: it counts
// the requests that reached it and answers as behave says.
type replica struct {
	url  string
	hits atomic.Int32
}

// newReplica starts a server that behaves as kind says: "ok" answers 200
// with a JSON object, "503" answers 503, "cut" reads the request and closes
// the connection without answering, "hang" never answers, "refused" is an
// address nothing listens on any more, "403" refuses.
func newReplica(t *testing.T, kind string) *replica {
	t.Helper()
	r := &replica{}
	if kind == "refused" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.url = "http://" + ln.Addr().String()
		ln.Close()
		return r
	}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		switch kind {
		case "ok":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"name":"alice"}`))
		case "503":
			http.Error(w, `{"error":"replica stopping"}`, http.StatusServiceUnavailable)
		case "403":
			http.Error(w, `{"error":"forbidden"}`, http.StatusForbidden)
		case "cut":
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		case "hang":
			select {
			case <-release:
			case <-req.Context().Done():
			}
		}
	}))
	t.Cleanup(func() { close(release); srv.CloseClientConnections(); srv.Close() })
	r.url = srv.URL
	return r
}

// TestFailover checks which requests move on to the next server URL and
// which are sent there again: reads always, writes only when they never
// left this host.
func TestFailover(t *testing.T) {
	tests := []struct {
		first  string // how the first URL behaves
		write  bool   // a POST instead of a GET
		wantOK bool   // the call succeeds (on the second URL)
		// wantFirstHits is how many times the request reached the first.
		wantFirstHits int32
		wantMoved     bool // the next call starts on the second URL
	}{
		{first: "refused", wantOK: true, wantMoved: true},
		{first: "refused", write: true, wantOK: true, wantMoved: true},
		{first: "503", wantOK: true, wantFirstHits: 1, wantMoved: true},
		{first: "503", write: true, wantOK: false, wantFirstHits: 1, wantMoved: true},
		{first: "cut", wantOK: true, wantFirstHits: 1, wantMoved: true},
		{first: "cut", write: true, wantOK: false, wantFirstHits: 1, wantMoved: true},
		{first: "403", wantOK: false, wantFirstHits: 1, wantMoved: false},
		{first: "403", write: true, wantOK: false, wantFirstHits: 1, wantMoved: false},
		{first: "ok", write: true, wantOK: true, wantFirstHits: 1, wantMoved: false},
	}
	for _, tt := range tests {
		name := tt.first + "/get"
		if tt.write {
			name = tt.first + "/post"
		}
		t.Run(name, func(t *testing.T) {
			a, b := newReplica(t, tt.first), newReplica(t, "ok")
			var mu sync.Mutex
			var switches []string
			c, err := New(a.url+", "+b.url, "tok", WithSwitchHook(func(from, to string, why error) {
				mu.Lock()
				defer mu.Unlock()
				switches = append(switches, from+" -> "+to)
			}))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tt.write {
				err = c.Report(ctx, wire.AgentReport{})
			} else {
				_, err = c.Whoami(ctx)
			}
			if (err == nil) != tt.wantOK {
				t.Fatalf("call error = %v, want success %v", err, tt.wantOK)
			}
			if got := a.hits.Load(); got != tt.wantFirstHits {
				t.Errorf("first server received the request %d times, want %d", got, tt.wantFirstHits)
			}
			wantB := int32(0)
			if tt.wantOK && tt.first != "ok" {
				wantB = 1
			}
			if got := b.hits.Load(); got != wantB {
				t.Errorf("second server received the request %d times, want %d (a write that may have been committed must not be sent twice)", got, wantB)
			}
			want := a.url
			if tt.wantMoved {
				want = b.url
			}
			if got := c.Server(); got != want {
				t.Errorf("server in use after the call = %s, want %s", got, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.wantMoved != (len(switches) == 1) {
				t.Errorf("switch hook calls = %v, want one iff moved (%v)", switches, tt.wantMoved)
			}
		})
	}
}

// TestFailoverTimeout checks that a server that holds a call past the
// caller's deadline (a black hole) is left for the next call.
func TestFailoverTimeout(t *testing.T) {
	a, b := newReplica(t, "hang"), newReplica(t, "ok")
	c, err := New(a.url+","+b.url, "tok")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.Whoami(ctx)
	cancel()
	if err == nil {
		t.Fatal("a call to a server that never answers succeeded")
	}
	if _, err := c.Whoami(context.Background()); err != nil {
		t.Fatalf("next call: %v", err)
	}
	if b.hits.Load() != 1 {
		t.Errorf("the second server got %d requests, want 1", b.hits.Load())
	}
	// A cancellation by the caller says nothing of the server.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	c.Whoami(ctx)
	if c.Server() != b.url {
		t.Errorf("a cancelled call moved the client to %s", c.Server())
	}
}

// TestFailoverTunnel checks that the WebSocket dial of a tunnel (and the
// agent's relay connection) moves on too.
func TestFailoverTunnel(t *testing.T) {
	a := newReplica(t, "refused")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"no grant"}`, http.StatusForbidden)
	}))
	defer srv.Close()
	c, err := New(a.url+","+srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Tunnel(context.Background(), "web", 22)
	if StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "no grant") {
		t.Fatalf("tunnel error = %v, want the second server's 403", err)
	}
}

func TestParseServers(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "https://a.example", want: 1},
		{in: "https://a.example/, https://b.example,https://a.example", want: 2},
		{in: "", wantErr: true},
		{in: " , ", wantErr: true},
		{in: "https://a.example,ftp://b.example", wantErr: true},
		{in: "a.example", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseServers(tt.in)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("ParseServers(%q) = %v, %v; want %d URLs, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
