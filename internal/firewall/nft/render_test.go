package nft

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

var renderNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestRenderGolden(t *testing.T) {
	for name, rs := range map[string]firewall.Ruleset{
		"render.golden":         sampleRuleset(renderNow),
		"render-gateway.golden": gatewayRuleset(renderNow),
	} {
		t.Run(name, func(t *testing.T) { checkGolden(t, name, Render(rs, renderNow)) })
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("Render mismatch (-want +got):\n%s", diff)
	}
}

// TestRenderIsWhatApplyBuilds loads Render's text with nft -f and checks that
// Apply then finds nothing to change: the dry-run text and the netlink
// objects are the same ruleset.
func TestRenderIsWhatApplyBuilds(t *testing.T) {
	t.Run("host", func(t *testing.T) { testRenderIsWhatApplyBuilds(t, sampleRuleset) })
	t.Run("gateway", func(t *testing.T) { testRenderIsWhatApplyBuilds(t, gatewayRuleset) })
}

func testRenderIsWhatApplyBuilds(t *testing.T, ruleset func(time.Time) firewall.Ruleset) {
	b, ns := newTestBackend(t)
	now := time.Now()
	rs := ruleset(now)
	load(t, ns, Render(rs, now))
	res, err := b.Apply(context.Background(), rs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("Apply after loading Render's output changed %+v", res)
	}
	st, err := b.State(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Elements) != len(rs.Elements(now)) || len(st.Protected) != len(rs.SortedProtected()) ||
		len(st.Translations) != len(rs.Translations(now)) || len(st.Published) != len(rs.Published) || st.Mode != rs.Mode {
		t.Errorf("State after loading Render's output = %v", st)
	}
	// An empty ruleset renders to valid nft too.
	load(t, testenv.NewNetns(t), Render(firewall.Ruleset{}, now))
}
