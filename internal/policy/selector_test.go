package policy

import (
	"strings"
	"testing"
)

func TestSelector(t *testing.T) {
	prodDB := map[string]string{"env": "prod", "team": "db"}
	tests := []struct {
		name, sel string
		labels    map[string]string
		want      bool
		wantErr   bool
	}{
		{name: "empty matches all", sel: "", labels: nil, want: true},
		{name: "one label", sel: "env=prod", labels: prodDB, want: true},
		{name: "all must hold", sel: "env=prod,team=web", labels: prodDB, want: false},
		{name: "both hold", sel: "env=prod, team==db", labels: prodDB, want: true},
		{name: "not equal, other value", sel: "env!=staging", labels: prodDB, want: true},
		{name: "not equal, same value", sel: "env!=prod", labels: prodDB, want: false},
		{name: "not equal, absent", sel: "zone!=a", labels: prodDB, want: true},
		{name: "missing label", sel: "zone=a", labels: prodDB, want: false},
		{name: "no value", sel: "env=", wantErr: true},
		{name: "no operator", sel: "env", wantErr: true},
		{name: "bad key", sel: "Env=prod", wantErr: true},
		{name: "empty part", sel: "env=prod,", wantErr: true},
		{name: "control character", sel: "env=pr\x00od", wantErr: true},
		// Every row listed is matched against every requirement: a
		// selector of 80,000 always-true terms (an 880 KB query) made a
		// listing of 500 targets take 100 times as long. At most
		// MaxSelectorTerms, and values no longer than a label's.
		{name: "as many terms as allowed", sel: strings.Repeat("zone!=a,", MaxSelectorTerms-1) + "env=prod", labels: prodDB, want: true},
		{name: "too many terms", sel: strings.Repeat("zone!=a,", MaxSelectorTerms) + "env=prod", wantErr: true},
		{name: "value longer than a label's", sel: "zone!=" + strings.Repeat("a", 64), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSelector(tt.sel)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSelector(%q) error %v, want error %v", tt.sel, err, tt.wantErr)
			}
			if err != nil {
				if fe, ok := err.(*FieldError); !ok || fe.Field != "selector" {
					t.Errorf("error %T %v, want a FieldError on selector", err, err)
				}
				return
			}
			if got := s.Matches(tt.labels); got != tt.want {
				t.Errorf("%q matches %v = %v, want %v", tt.sel, tt.labels, got, tt.want)
			}
		})
	}
}
