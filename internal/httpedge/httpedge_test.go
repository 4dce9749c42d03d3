package httpedge

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestClientAddr(t *testing.T) {
	proxies := prefixes("10.0.0.0/8", "2001:db8:ffff::/48")
	tests := []struct {
		name    string
		peer    string   // RemoteAddr
		xff     []string // X-Forwarded-For header lines
		trusted []netip.Prefix
		want    string // "" for the zero Addr
	}{
		{name: "no proxy trusted: the peer, whatever the header says", peer: "203.0.113.7:5555", xff: []string{"198.51.100.1"}, want: "203.0.113.7"},
		{name: "untrusted peer with trusted proxies configured", peer: "203.0.113.7:5555", xff: []string{"198.51.100.1"}, trusted: proxies, want: "203.0.113.7"},
		{name: "trusted peer, one hop", peer: "10.0.0.1:5555", xff: []string{"198.51.100.1"}, trusted: proxies, want: "198.51.100.1"},
		{name: "spoofed entries left of the real client are ignored", peer: "10.0.0.1:5555", xff: []string{"192.0.2.66, 198.51.100.1"}, trusted: proxies, want: "198.51.100.1"},
		{name: "a chain of trusted proxies is walked", peer: "10.0.0.1:5555", xff: []string{"192.0.2.66, 198.51.100.1, 10.2.3.4, 10.9.9.9"}, trusted: proxies, want: "198.51.100.1"},
		{name: "several header lines form one list", peer: "10.0.0.1:5555", xff: []string{"192.0.2.66", "198.51.100.1, 10.2.3.4"}, trusted: proxies, want: "198.51.100.1"},
		{name: "trusted peer without the header", peer: "10.0.0.1:5555", trusted: proxies, want: "10.0.0.1"},
		{name: "malformed entry stops at the last trusted hop", peer: "10.0.0.1:5555", xff: []string{"198.51.100.1, not-an-address"}, trusted: proxies, want: "10.0.0.1"},
		{name: "malformed entry behind a trusted hop", peer: "10.0.0.1:5555", xff: []string{"garbage, 10.2.3.4"}, trusted: proxies, want: "10.2.3.4"},
		{name: "address with port in the header is malformed", peer: "10.0.0.1:5555", xff: []string{"198.51.100.1:80"}, trusted: proxies, want: "10.0.0.1"},
		{name: "empty header entry", peer: "10.0.0.1:5555", xff: []string{"198.51.100.1,"}, trusted: proxies, want: "10.0.0.1"},
		{name: "all hops trusted: the leftmost", peer: "10.0.0.1:5555", xff: []string{"10.7.7.7, 10.2.3.4"}, trusted: proxies, want: "10.7.7.7"},
		{name: "IPv6 peer", peer: "[2001:db8::7]:5555", want: "2001:db8::7"},
		{name: "IPv6 peer with zone", peer: "[fe80::1%eth0]:5555", want: "fe80::1"},
		{name: "IPv6 trusted proxy, IPv6 client", peer: "[2001:db8:ffff::1]:443", xff: []string{"2001:db8:1::9"}, trusted: proxies, want: "2001:db8:1::9"},
		{name: "IPv6 client behind an IPv4 proxy", peer: "10.0.0.1:5555", xff: []string{"2001:db8:1::9"}, trusted: proxies, want: "2001:db8:1::9"},
		{name: "mapped peer is unmapped before the trust check", peer: "[::ffff:10.0.0.1]:5555", xff: []string{"198.51.100.1"}, trusted: proxies, want: "198.51.100.1"},
		{name: "mapped untrusted peer", peer: "[::ffff:203.0.113.7]:5555", trusted: proxies, want: "203.0.113.7"},
		{name: "mapped hop is unmapped", peer: "10.0.0.1:5555", xff: []string{"::ffff:198.51.100.1"}, trusted: proxies, want: "198.51.100.1"},
		{name: "mapped trusted hop is walked past", peer: "10.0.0.1:5555", xff: []string{"198.51.100.1, ::ffff:10.2.3.4"}, trusted: proxies, want: "198.51.100.1"},
		{name: "peer without port", peer: "203.0.113.7", want: "203.0.113.7"},
		{name: "unparsable peer", peer: "@", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got := ClientAddr(r, tt.trusted)
			want := netip.Addr{}
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got != want {
				t.Errorf("ClientAddr = %v, want %v", got, want)
			}
		})
	}
}

func TestHTTPS(t *testing.T) {
	proxies := prefixes("10.0.0.0/8")
	tests := []struct {
		name    string
		peer    string
		tls     bool
		proto   string
		trusted []netip.Prefix
		want    bool
	}{
		{name: "TLS here", peer: "203.0.113.7:1", tls: true, want: true},
		{name: "plain", peer: "203.0.113.7:1", want: false},
		{name: "untrusted peer claiming https", peer: "203.0.113.7:1", proto: "https", trusted: proxies, want: false},
		{name: "trusted proxy saying https", peer: "10.0.0.1:1", proto: "https", trusted: proxies, want: true},
		{name: "trusted proxy saying http", peer: "10.0.0.1:1", proto: "http", trusted: proxies, want: false},
		{name: "mapped trusted proxy", peer: "[::ffff:10.0.0.1]:1", proto: "https", trusted: proxies, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.peer
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			if got := HTTPS(r, tt.trusted); got != tt.want {
				t.Errorf("HTTPS = %v, want %v", got, tt.want)
			}
		})
	}
}
