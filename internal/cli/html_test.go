package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// htmlDoc parses a page and returns its text (blanks collapsed) and the
// number of elements of each name.
func htmlDoc(t *testing.T, page string) (string, map[string]int) {
	t.Helper()
	if !strings.HasPrefix(page, "<!DOCTYPE html>") {
		t.Fatalf("not an HTML page: %.80q", page)
	}
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var text []string
	tags := map[string]int{}
	for n := range doc.Descendants() {
		switch n.Type {
		case html.ElementNode:
			tags[n.Data]++
		case html.TextNode:
			if p := n.Parent; p != nil && p.Data != "style" {
				text = append(text, n.Data)
			}
		}
	}
	return strings.Join(strings.Fields(strings.Join(text, " ")), " "), tags
}

// -o html on the three commands that have it: the diagnosis, the plan,
// and a simulation with its report (the timeline's SVG chart above the
// diagnosis). Each is one page with no script; the diagnosis's page
// names the same findings as -o json.
func TestHTMLOutputs(t *testing.T) {
	const fixture = "../../host/testdata/hosts/centos5"
	rep := report(t, "--root", fixture)
	text, tags := htmlDoc(t, run(t, "--root", fixture, "-o", "html"))
	if tags["script"] > 0 || tags["pre"] == 0 {
		t.Errorf("diagnosis page: %d scripts, %d command blocks", tags["script"], tags["pre"])
	}
	for _, f := range rep.Findings {
		if !strings.Contains(text, f.ID) {
			t.Errorf("finding %s not on the page", f.ID)
		}
	}
	if !strings.Contains(text, rep.Verdict.Reason) {
		t.Errorf("verdict %q not on the page", rep.Verdict.Reason)
	}

	plan := planJSON(t, "--root", fixture, "--no-predict")
	text, tags = htmlDoc(t, run(t, "plan", "--root", fixture, "--no-predict", "-o", "html"))
	if tags["script"] > 0 || !strings.Contains(text, "ctdoctor plan") {
		t.Errorf("plan page: %d scripts, text %.200q", tags["script"], text)
	}
	for _, s := range append(plan.Steps, plan.GlobalSteps...) {
		if !strings.Contains(text, s.Title) {
			t.Errorf("step %q not on the plan's page", s.Title)
		}
	}

	var res struct {
		Summary struct{ Verdict string }
		Report  struct{ Verdict struct{ Reason string } }
	}
	args := []string{"simulate", "nginx-local-upstream", "--duration", "3m", "--report"}
	if err := json.Unmarshal([]byte(run(t, append(args, "-o", "json")...)), &res); err != nil {
		t.Fatal(err)
	}
	page := run(t, append(args, "-o", "html")...)
	text, tags = htmlDoc(t, page)
	if tags["script"] > 0 || tags["polyline"] == 0 {
		t.Errorf("simulation page: %d scripts, %d chart lines", tags["script"], tags["polyline"])
	}
	i, j := strings.Index(text, res.Summary.Verdict), strings.Index(text, res.Report.Verdict.Reason)
	if res.Summary.Verdict == "" || i < 0 || j < i {
		t.Errorf("want the run's verdict %q (at %d) before the diagnosis's %q (at %d)", res.Summary.Verdict, i, res.Report.Verdict.Reason, j)
	}
	if c := strings.Index(page, "<polyline"); c < 0 || c > strings.Index(page, "Diagnosis of the simulated table") {
		t.Error("the timeline must come above the diagnosis")
	}

	// One run's page: not for two runs, a capture, a list or a YAML.
	for _, extra := range [][]string{{"--compare", "nf_conntrack_max=131072"}, {"--print"}} {
		r := mainResult(append([]string{"simulate", "nginx-local-upstream", "-o", "html"}, extra...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "-o html is the page of one simulated run") {
			t.Errorf("simulate -o html %v: exit %d, %s", extra, r.code, r.stderr)
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"plan", "-o", "pdf"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-o must be text, json, sh or html") {
		t.Errorf("plan -o pdf: exit %d, %s", code, errb.String())
	}
}
