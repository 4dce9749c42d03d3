package main

import (
	"testing"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestRecordedLogin: jitgate ssh on a recorded port logs in (through the
// server's terminal, with a certificate) as USER of USER@TARGET, or the
// rule's first login; a user the rule does not name, or a rule naming
// none, is refused before anything is opened.
func TestRecordedLogin(t *testing.T) {
	rule := wire.PortRule{Port: 22, Logins: []string{"ubuntu", "deploy"}}
	for _, tt := range []struct {
		rule    wire.PortRule
		user    string
		want    string
		wantErr bool
	}{
		{rule, "", "ubuntu", false},
		{rule, "deploy", "deploy", false},
		{rule, "root", "", true},
		{wire.PortRule{Port: 22}, "", "", true},
		{wire.PortRule{Port: 22}, "root", "", true},
	} {
		got, err := recordedLogin(tt.rule, tt.user)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("recordedLogin(%v, %q) = %q, %v; want %q (error %v)", tt.rule.Logins, tt.user, got, err, tt.want, tt.wantErr)
		}
	}
}
