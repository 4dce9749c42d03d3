package random

import (
	"regexp"
	"testing"
)

func TestFormats(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    func() string
		re   string
	}{
		{"secret", Secret, `^[A-Za-z0-9_-]{43}$`},
		{"id", func() string { return ID("r-", 10) }, `^r-[a-z2-7]{16}$`},
		{"hex", func() string { return Hex(6) }, `^[0-9a-f]{12}$`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			re := regexp.MustCompile(tt.re)
			seen := map[string]bool{}
			for range 100 {
				s := tt.f()
				if !re.MatchString(s) {
					t.Fatalf("%q does not match %s", s, tt.re)
				}
				if seen[s] {
					t.Fatalf("%q came twice in 100 draws", s)
				}
				seen[s] = true
			}
		})
	}
}
