package audit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDocsListEveryAction: the table of event types in docs/design.md names
// every Action constant of this package, and nothing else. The constants
// are read from the source, so a new one cannot be forgotten in the docs.
func TestDocsListEveryAction(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Action" {
					continue
				}
				for _, v := range vs.Values {
					if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						s, _ := strconv.Unquote(lit.Value)
						consts = append(consts, s)
					}
				}
			}
		}
	}
	if len(consts) < 30 {
		t.Fatalf("read %d Action constants from the source, want them all: %q", len(consts), consts)
	}

	b, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start, end := strings.Index(doc, "<!-- audit-actions:begin -->"), strings.Index(doc, "<!-- audit-actions:end -->")
	if start < 0 || end < start {
		t.Fatal("docs/design.md has no audit-actions table")
	}
	var listed []string
	first := regexp.MustCompile(`^\| ([^|]*)\|`)
	code := regexp.MustCompile("`([a-z_]+\\.[a-z_]+)`")
	for _, line := range strings.Split(doc[start:end], "\n") {
		if m := first.FindStringSubmatch(line); m != nil {
			for _, c := range code.FindAllStringSubmatch(m[1], -1) {
				listed = append(listed, c[1])
			}
		}
	}
	for _, c := range consts {
		if !slices.Contains(listed, c) {
			t.Errorf("audit action %q is not in the table of docs/design.md", c)
		}
	}
	for _, l := range listed {
		if !slices.Contains(consts, l) {
			t.Errorf("docs/design.md lists %q, which is no audit action", l)
		}
	}
}
