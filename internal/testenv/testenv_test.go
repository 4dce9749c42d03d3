package testenv_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
)

func TestNewNetnsIsIsolated(t *testing.T) {
	ns := testenv.NewNetns(t)
	var names []string
	err := ns.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Errorf("interfaces in a new namespace = %v, want [lo]", names)
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Errorf("loopback is not up: %s", out)
	}
}

func TestNewLinkCarriesTCP(t *testing.T) {
	client, server := testenv.NewNetns(t), testenv.NewNetns(t)
	testenv.NewLink(t,
		testenv.LinkEnd{NS: client, Name: "eth0", Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")}},
		testenv.LinkEnd{NS: server, Name: "eth0", Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64")}},
	)
	ln, err := server.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	for _, tc := range []struct{ dst, wantSrc string }{
		{"192.0.2.2:7", "192.0.2.1"},
		{"[2001:db8::2]:7", "2001:db8::1"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.DialContext(ctx, &net.Dialer{}, "tcp", tc.dst)
		cancel()
		if err != nil {
			t.Fatalf("dialing %s from the client namespace: %v", tc.dst, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if got := netip.MustParseAddrPort(string(b)).Addr().String(); got != tc.wantSrc {
			t.Errorf("server saw source %s, want %s", got, tc.wantSrc)
		}
	}
}
