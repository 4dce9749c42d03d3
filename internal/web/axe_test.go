package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// axeSource is axe-core (pinned in tools/axe/package-lock.json; scripts/
// test.sh installs it with npm ci), read once.
var axeSource = sync.OnceValues(func() ([]byte, error) {
	return os.ReadFile(filepath.Join("..", "..", "tools", "axe", "node_modules", "axe-core", "axe.min.js"))
})

// checkAxe runs axe-core (WCAG 2.x A and AA rules) on the page p shows and
// fails the test on any violation, naming the rule and the elements. It
// fails when axe-core is not installed under CI=true, and skips otherwise.
func checkAxe(t *testing.T, p *person, what string) {
	t.Helper()
	src, err := axeSource()
	if err != nil {
		msg := "axe-core is not installed: run `npm ci --prefix tools/axe` (scripts/test.sh does it): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var loaded bool
	p.eval(`(() => { if (!window.axe) { (0, eval)(`+jsString(string(src))+`); } return !!window.axe; })()`, &loaded)
	if !loaded {
		t.Fatalf("%s: axe-core did not load", what)
	}
	var violations []struct {
		ID, Impact, Help string
		Nodes            []struct{ Target []string }
	}
	p.eval(`axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
		.then(r => r.violations.map(v => ({ID: v.id, Impact: v.impact || '', Help: v.help, Nodes: v.nodes.map(n => ({Target: n.target.map(String)}))})))`, &violations)
	for _, v := range violations {
		var where []string
		for _, n := range v.Nodes {
			where = append(where, strings.Join(n.Target, " "))
		}
		t.Errorf("%s: axe %s (%s): %s at %s", what, v.ID, v.Impact, v.Help, fmt.Sprint(where))
	}
}
