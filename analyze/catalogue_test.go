package analyze_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// Every finding the fixture hosts produce is in the catalogue, with a
// severity the catalogue lists for it.
func TestCatalogueCoversFixtureFindings(t *testing.T) {
	seen := map[string]bool{}
	for _, dir := range fixtureHosts(t) {
		_, r := fixtureReport(t, dir)
		for _, f := range r.Findings {
			seen[f.ID] = true
			spec, ok := analyze.LookupFinding(f.ID)
			if !ok {
				t.Errorf("%s: finding %q is not in analyze.Catalogue()", filepath.Base(dir), f.ID)
				continue
			}
			if !slices.Contains(spec.Severities, f.Severity) {
				t.Errorf("%s: finding %q has severity %q; the catalogue lists %v", filepath.Base(dir), f.ID, f.Severity, spec.Severities)
			}
		}
	}
	if len(seen) < 5 {
		t.Errorf("the fixture hosts produced only %d distinct findings: %v", len(seen), seen)
	}
}

// The catalogue and the rules' source name the same ids, and each rule's
// severities (the constants its source assigns) are those the catalogue
// lists: a new rule, or a new severity of an old one, must be added there.
func TestCatalogueMatchesRuleSource(t *testing.T) {
	files, err := filepath.Glob("rules_*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files: %v", err)
	}
	fromSource := map[string][]string{} // id -> severities seen in its rule function
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			var ids []string
			sevs := map[string]bool{}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.KeyValueExpr:
					k, ok := n.Key.(*ast.Ident)
					if !ok {
						return true
					}
					switch k.Name {
					case "ID":
						if lit, ok := n.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							id, _ := strconv.Unquote(lit.Value)
							ids = append(ids, id)
						}
					case "Severity":
						if id, ok := n.Value.(*ast.Ident); ok {
							addSeverity(sevs, id.Name)
						}
					}
				case *ast.AssignStmt:
					for i, lhs := range n.Lhs {
						if l, ok := lhs.(*ast.Ident); ok && (l.Name == "sev" || l.Name == "s") && i < len(n.Rhs) {
							if id, ok := n.Rhs[i].(*ast.Ident); ok {
								addSeverity(sevs, id.Name)
							}
						}
					}
				}
				return true
			})
			for _, id := range ids {
				for s := range sevs {
					fromSource[id] = append(fromSource[id], s)
				}
				if _, ok := fromSource[id]; !ok {
					fromSource[id] = nil
				}
			}
		}
	}
	cat := analyze.Catalogue()
	inCat := map[string]bool{}
	for _, spec := range cat {
		inCat[spec.ID] = true
		sevs, ok := fromSource[spec.ID]
		if !ok {
			t.Errorf("catalogue id %q is emitted by no rule", spec.ID)
			continue
		}
		slices.Sort(sevs)
		want := slices.Clone(spec.Severities)
		slices.Sort(want)
		if !slices.Equal(slices.Compact(sevs), want) {
			t.Errorf("%s: the rule's source assigns severities %v, the catalogue lists %v", spec.ID, sevs, spec.Severities)
		}
		if spec.Title == "" {
			t.Errorf("%s: no title", spec.ID)
		}
	}
	for id := range fromSource {
		if !inCat[id] {
			t.Errorf("rule id %q is not in analyze.Catalogue()", id)
		}
	}
	if len(fromSource) < 15 {
		t.Errorf("found only %d ids in the rules' source: the scan is broken", len(fromSource))
	}
}

func addSeverity(m map[string]bool, ident string) {
	switch ident {
	case "Info":
		m[analyze.Info] = true
	case "Warning":
		m[analyze.Warning] = true
	case "Critical":
		m[analyze.Critical] = true
	}
}

// Catalogue hands out a copy.
func TestCatalogueIsACopy(t *testing.T) {
	a := analyze.Catalogue()
	a[0].ID = "changed"
	a[0].Severities[0] = "changed"
	b := analyze.Catalogue()
	if b[0].ID == "changed" || b[0].Severities[0] == "changed" {
		t.Fatal("Catalogue returned the package's own slice")
	}
}
