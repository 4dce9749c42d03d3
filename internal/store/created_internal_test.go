package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
)

// TestCreatedRequestAsStored: the request a creation answers with, built
// from the values its insert wrote (insertedRequest), is the row as the
// database holds it, read back by scanRequest, in every shape a new row
// takes: granted at once, granted by extending a grant the requester held,
// clipped to a window's end, waiting for approvals by group, scheduled,
// bastion-only (no source).
func TestCreatedRequestAsStored(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 12, 7, 10, 0, 0, 123_456_789, time.UTC) // a Monday
	admin := Actor{Name: "admin"}
	if _, _, err := s.CreateTarget(ctx, admin, "web-1", nil, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour},
		{Port: policy.Port{Number: 8080, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour, Windows: []string{"mon-sun 08:00-10:30 UTC"}},
		{Port: policy.Port{Number: 443, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour,
			Approval: policy.Approval{Mode: policy.Manual}, ApprovalGroups: []policy.GroupApproval{{From: "group:ops", Count: 1}}},
		{Port: policy.Port{Number: 2222, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour, Access: policy.AccessBastion},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, admin, "web-1", pol, now); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParsePrefix("192.0.2.7/32")
	tcp := func(n uint16) []policy.Port { return []policy.Port{{Number: n, Protocol: policy.TCP}} }
	cases := []struct {
		name  string
		actor string
		req   policy.Request
		opt   RequestOptions
		want  access.State
		check func(Request) bool
	}{
		{"granted", "alice", policy.Request{Ports: tcp(22), Source: src, Duration: 90*time.Minute + 1500*time.Microsecond, Reason: "deploy"}, RequestOptions{}, access.Pending,
			func(r Request) bool { return r.Revision > 0 && r.ApprovedAt != nil && r.Version == 2 }},
		{"extending the grant alice holds", "alice", policy.Request{Ports: tcp(22), Source: src, Duration: 2 * time.Hour}, RequestOptions{}, access.Pending,
			func(r Request) bool { return len(r.Extended) == 1 }},
		{"clipped to the window", "bob", policy.Request{Ports: tcp(8080), Source: src, Duration: time.Hour}, RequestOptions{}, access.Pending,
			func(r Request) bool { return r.WindowEnd != nil }},
		{"awaiting approvals", "carol", policy.Request{Ports: tcp(443), Source: src, Duration: time.Hour}, RequestOptions{}, access.PendingApproval,
			func(r Request) bool { return r.ApproveBy != nil && len(r.ApprovalGroups) == 1 && r.Revision == 0 }},
		{"scheduled", "dave", policy.Request{Ports: tcp(22), Source: src, Duration: time.Hour}, RequestOptions{Start: now.Add(30 * time.Minute)}, access.Scheduled,
			func(r Request) bool { return r.StartsAt != nil }},
		{"bastion-only", "erin", policy.Request{Ports: tcp(2222), Duration: time.Hour}, RequestOptions{}, access.Pending,
			func(r Request) bool { return !r.Source.IsValid() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var created, stored Request
			err := s.tx(ctx, func(tx *sql.Tx) error {
				var refusal, err error
				created, _, refusal, err = s.createRequestTx(ctx, tx, Actor{Name: c.actor, ClientAddr: "198.51.100.1"}, "web-1", c.req, policy.DefaultLimits(), now, c.opt)
				if err != nil {
					return err
				}
				if refusal != nil {
					return refusal
				}
				stored, err = scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, created.ID))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if created.State != c.want {
				t.Errorf("state %s, want %s", created.State, c.want)
			}
			if !c.check(created) {
				t.Errorf("%+v is not the case this one tests", created)
			}
			if !reflect.DeepEqual(created, stored) {
				t.Errorf("answered\n%+v\nstored\n%+v", created, stored)
			}
		})
	}
}

// TestDecodePorts: the ports as encodePorts writes them decode without the
// JSON decoder to what the decoder gives, and other JSON still decodes.
func TestDecodePorts(t *testing.T) {
	for _, js := range []string{`[]`, `["22/tcp"]`, `["22/tcp","53/udp","443/tcp"]`, `[ "22/tcp" ]`, `["22"]`, `["2\u0032/tcp"]`, `["22/tcp", "53/udp"]`} {
		got, err := decodePorts(js)
		if err != nil {
			t.Errorf("%s: %v", js, err)
			continue
		}
		var strs []string
		if err := json.Unmarshal([]byte(js), &strs); err != nil {
			t.Fatal(err)
		}
		want := []policy.Port{}
		for _, v := range strs {
			p, err := policy.ParsePort(v)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, p)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", js, got, want)
		}
	}
	for _, js := range []string{`["22/tcp"`, `["x/tcp"]`, `{}`} {
		if _, err := decodePorts(js); err == nil {
			t.Errorf("%s decoded", js)
		}
	}
	ports := []policy.Port{{Number: 22, Protocol: policy.TCP}, {Number: 53, Protocol: policy.UDP}}
	if got, err := decodePorts(encodePorts(ports)); err != nil || !reflect.DeepEqual(got, ports) {
		t.Errorf("round trip: %v, %v", got, err)
	}
}
