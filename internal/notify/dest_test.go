package notify_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/store"
)

func TestCheckAddr(t *testing.T) {
	for s, ok := range map[string]bool{
		"127.0.0.1": false, "127.8.9.10": false, "::1": false, "0.0.0.0": false, "::": false,
		"10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "fd00::1": false,
		"169.254.169.254": false, "fe80::1": false, "100.100.100.200": false, "224.0.0.1": false,
		"255.255.255.255": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false, "64:ff9b::7f00:1": false,
		"2002:7f00:1::": false, "fec0::1": false,
		"192.0.2.1": true, "198.51.100.7": true, "8.8.8.8": true, "2001:db8::1": true, "2606:4700::1111": true,
	} {
		err := notify.CheckAddr(netip.MustParseAddr(s), false)
		if (err == nil) != ok {
			t.Errorf("CheckAddr(%s) = %v, want allowed=%v", s, err, ok)
		}
		if err := notify.CheckAddr(netip.MustParseAddr(s), true); err != nil {
			t.Errorf("CheckAddr(%s, allowPrivate) = %v", s, err)
		}
	}
	for raw, ok := range map[string]bool{
		"http://127.0.0.1:8080/x": false, "http://[::1]/x": false, "https://localhost/x": false, "https://LOCALHOST./x": false,
		"https://a.localhost/x": false, "http://169.254.169.254/latest/meta-data": false, "https://10.0.0.5/x": false,
		"https://hooks.example.com/x": true, "http://192.0.2.1:9000/hook": true,
		// IPv4 in the forms inet_aton reads (getaddrinfo, curl, proxies):
		// addresses in disguise, judged as the address.
		"http://2130706433/": false, "http://0x7f.1/": false, "http://127.1/": false, "http://0177.0.0.1/": false,
		"http://0x7f000001/": false, "http://10.1/": false, "http://0/": false, "http://169.254.43518/": false,
		"http://3221225985/": true, "http://0xc0.0.2.1/": true, // 192.0.2.1
		"https://1.example/x": true, "https://0x.example/x": true, "https://example.0/x": true, "https://a.b.c.d.e/x": true,
	} {
		u, _ := url.Parse(raw)
		if err := notify.CheckURL(u, false); (err == nil) != ok {
			t.Errorf("CheckURL(%s) = %v, want allowed=%v", raw, err, ok)
		}
	}
}

// TestPrivateDestinationRefusedAtDial: the default client refuses to
// connect to a loopback receiver, whether the URL names the address or a
// name that resolves to it (localhost: the check sees the dialled address,
// not the URL); the receiver is never reached. With AllowPrivate the same
// deliveries go through.
func TestPrivateDestinationRefusedAtDial(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	for _, allow := range []bool{false, true} {
		st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
		byIP := addHook(t, st, srv.URL+"/ip", store.FormatGeneric)
		byName := addHook(t, st, "http://localhost:"+port+"/name", store.FormatGeneric)
		emit(t, st, 1)
		o := fast()
		o.AllowPrivate = allow
		stop := run(notify.New(st, o))
		for _, hook := range []string{byIP, byName} {
			deadline := time.Now().Add(5 * time.Second)
			for {
				ds, err := st.ListDeliveries(context.Background(), hook, 10)
				if err != nil || len(ds) != 1 {
					t.Fatalf("deliveries of %s = %+v, %v", hook, ds, err)
				}
				d := ds[0]
				if allow && d.State == store.DeliveryDelivered {
					break
				}
				if !allow && d.LastError != "" {
					if d.State == store.DeliveryDelivered || !strings.Contains(d.LastError, "non-public address") {
						t.Errorf("hook %s: delivery %+v, want refused as non-public", hook, d)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("allow=%v hook %s: delivery %+v after 5s", allow, hook, d)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		stop()
		st.Close()
		if got := hits.Load(); !allow && got != 0 {
			t.Errorf("the loopback receiver was reached %d times without --webhook-allow-private", got)
		}
	}
	if hits.Load() < 2 {
		t.Errorf("with AllowPrivate the receiver got %d deliveries, want 2", hits.Load())
	}
}

// TestReceiverBodyNotStored: what a failing receiver answers is not kept
// (only its status): a receiver cannot write into jitgate's database.
func TestReceiverBodyNotStored(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "internal-secret-from-the-receiver \x1b[2J")
	}))
	defer srv.Close()
	st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
	defer st.Close()
	hook := addHook(t, st, srv.URL, store.FormatGeneric)
	emit(t, st, 1)
	stop := run(notify.New(st, fast()))
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds, err := st.ListDeliveries(context.Background(), hook, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 && ds[0].LastError != "" {
			if ds[0].LastError != "the receiver answered 418 I'm a teapot" {
				t.Errorf("last error = %q, want only the status", ds[0].LastError)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt recorded: %+v", ds)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSignatureCoversTimestamp: a delivery verifies with its own headers;
// the same body and signature with another timestamp (a replay made to look
// fresh) or another id does not.
func TestSignatureCoversTimestamp(t *testing.T) {
	got := make(chan http.Header, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- r.Header.Clone():
			bodies <- b
		default:
		}
	}))
	defer srv.Close()
	st := openStore(t, filepath.Join(t.TempDir(), "j.db"))
	defer st.Close()
	addHook(t, st, srv.URL, store.FormatGeneric)
	emit(t, st, 1)
	stop := run(notify.New(st, fast()))
	defer stop()
	var h http.Header
	select {
	case h = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
	body := <-bodies
	if h.Get("X-Jitgate-Signature") != "" {
		t.Errorf("the old body-only signature is still sent")
	}
	if !strings.HasPrefix(h.Get("webhook-signature"), "v1,") || h.Get("webhook-id") == "" {
		t.Fatalf("headers = %v", h)
	}
	if !verify(h, body) {
		t.Fatalf("the delivery does not verify: %v", h)
	}
	ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	replay := h.Clone()
	replay.Set("webhook-timestamp", strconv.FormatInt(ts+3600, 10))
	if verify(replay, body) {
		t.Error("the signature still verifies with a changed timestamp")
	}
	other := h.Clone()
	other.Set("webhook-id", h.Get("webhook-id")+"0")
	if verify(other, body) {
		t.Error("the signature still verifies with a changed id")
	}
	if notify.Sign(secret, h.Get("webhook-id"), h.Get("webhook-timestamp"), body) != h.Get("webhook-signature") {
		t.Error("notify.Sign disagrees with the header")
	}
}
