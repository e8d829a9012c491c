package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/tune"
)

// fixtureHosts names the fake host roots under host/testdata/hosts.
func fixtureHosts(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join("..", "host", "testdata", "hosts")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	if len(out) < 4 {
		t.Fatalf("only %d fixture hosts in %s", len(out), dir)
	}
	return out
}

func renderHTML(t *testing.T, rep *analyze.Report, o HTMLOptions) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := HTML(&b, rep, o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// --- a few helpers over x/net/html's tree ---

func parseHTML(t *testing.T, page []byte) *html.Node {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return doc
}

func findAll(n *html.Node, pred func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if pred(d) {
			out = append(out, d)
		}
	}
	return out
}

func elem(tag string, classes ...string) func(*html.Node) bool {
	return func(n *html.Node) bool {
		if n.Type != html.ElementNode || n.Data != tag {
			return false
		}
		have := strings.Fields(attr(n, "class"))
		for _, c := range classes {
			if !slices.Contains(have, c) {
				return false
			}
		}
		return true
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// rawText is the text inside n, exactly.
func rawText(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

// pageText is the text a reader sees (without the stylesheet), blanks
// collapsed, text nodes separated by a blank.
func pageText(n *html.Node) string {
	var parts []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "style" || n.Data == "script") {
			return
		}
		if n.Type == html.TextNode {
			parts = append(parts, n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(strings.Join(parts, " ")), " ")
}

func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

// checkBalanced tokenizes the page and checks that every element that is
// not void is closed, in order: the template writes no markup that a
// parser has to repair.
func checkBalanced(t *testing.T, page []byte) {
	t.Helper()
	// (SVG's <rect/> and <line/> are self-closing tag tokens: not counted.)
	void := map[string]bool{"meta": true, "br": true, "hr": true, "img": true, "input": true, "link": true, "wbr": true}
	z := html.NewTokenizer(bytes.NewReader(page))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if len(stack) > 0 {
				t.Errorf("unclosed elements at the end: %v", stack)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if !void[string(name)] {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Fatalf("</%s> closes %v", name, stack)
			}
			stack = stack[:len(stack)-1]
		}
	}
}

// checkSelfContained checks that the page runs no script and fetches
// nothing: no script element or event handler, no element that loads a
// resource, no URL but a fragment in any attribute, no url() or @import
// in CSS.
func checkSelfContained(t *testing.T, doc *html.Node) {
	t.Helper()
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		switch n.Data {
		case "script", "link", "img", "iframe", "object", "embed", "video", "audio", "source", "image", "use", "form", "base":
			t.Errorf("<%s> in a self-contained page", n.Data)
		case "style":
			css := strings.ToLower(rawText(n))
			if strings.Contains(css, "url(") || strings.Contains(css, "@import") {
				t.Error("the stylesheet loads something (url() or @import)")
			}
		}
		for _, a := range n.Attr {
			k, v := strings.ToLower(a.Key), strings.ToLower(strings.TrimSpace(a.Val))
			switch {
			case strings.HasPrefix(k, "on"):
				t.Errorf("<%s %s=…>: an event handler", n.Data, a.Key)
			case k == "src" || k == "href" || k == "srcset" || k == "action" || k == "poster" || k == "data" || k == "formaction":
				if !strings.HasPrefix(v, "#") {
					t.Errorf("<%s %s=%q>: a URL to fetch", n.Data, a.Key, a.Val)
				}
			case k == "style" && strings.Contains(v, "url("):
				t.Errorf("<%s style=%q>: loads a URL", n.Data, a.Val)
			case k != "xmlns" && (strings.Contains(v, "http://") || strings.Contains(v, "https://") || strings.HasPrefix(v, "javascript:")):
				t.Errorf("<%s %s=%q>: a URL", n.Data, a.Key, a.Val)
			}
		}
	}
}

// jsonReport is what the test reads back from -o json: the numbers and
// texts the page must carry.
type jsonReport struct {
	Verdict struct{ Level, Reason string }
	Table   struct {
		Count int64
		Max   int64
		Usage float64
	}
	Stats map[string]any
	Log   struct {
		TableFullEvents int `json:"table_full_events"`
		Suppressed      int
	}
	Findings []struct {
		ID       string
		Severity string
		Summary  string
		Evidence map[string]any
		Fixes    []string
	}
	Warnings []string
}

// thousands writes n with a comma every three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// wantPct is how the page says a usage: whole percents, "<1%" under one
// percent, ">99%" when it rounds up to 100 without being full.
func wantPct(u float64) string {
	switch {
	case u == 0:
		return "0%"
	case u < 0.01:
		return "<1%"
	case u < 1 && u*100 >= 99.5:
		return ">99%"
	}
	return strconv.FormatFloat(u*100, 'f', 0, 64) + "%"
}

// For every fixture host, the page carries what -o json says for the
// same input: the verdict, count, max and usage (as text and as data
// values), every counter, the kernel log's events, every finding with
// its evidence keys and its fix lines in order (each command in a
// <pre><code> of its own, exactly as in the JSON), and every warning. The
// page parses, its elements are balanced, it runs and fetches nothing.
func TestHTMLCarriesTheJSONReport(t *testing.T) {
	for _, name := range fixtureHosts(t) {
		t.Run(name, func(t *testing.T) {
			rep := fixtureReport(t, name)
			page := renderHTML(t, rep, HTMLOptions{})
			checkBalanced(t, page)
			doc := parseHTML(t, page)
			checkSelfContained(t, doc)
			checkCarriesJSON(t, rep, doc)
		})
	}
}

// reportJSON is the report as -o json writes it, read back.
func reportJSON(t *testing.T, rep *analyze.Report) jsonReport {
	t.Helper()
	var js bytes.Buffer
	if err := JSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var want jsonReport
	dec := json.NewDecoder(&js)
	dec.UseNumber() // counters as written
	if err := dec.Decode(&want); err != nil {
		t.Fatal(err)
	}
	return want
}

// checkCarriesJSON checks that the page (parsed from the file, or from
// the DOM a browser built) carries what -o json says about rep.
func checkCarriesJSON(t *testing.T, rep *analyze.Report, doc *html.Node) {
	t.Helper()
	want := reportJSON(t, rep)
	text := pageText(doc)
	has := func(what, s string) {
		t.Helper()
		if !strings.Contains(text, squash(s)) {
			t.Errorf("%s %q not in the page's text", what, s)
		}
	}
	has("verdict", want.Verdict.Reason)
	has("verdict level", strings.ToUpper(want.Verdict.Level))
	if v := findAll(doc, elem("section", "verdict", want.Verdict.Level)); len(v) != 1 {
		t.Errorf("%d verdict sections of class %s", len(v), want.Verdict.Level)
	}

	// The table: count and max as text and as machine-readable values.
	dataValue := func(class string) (string, bool) {
		d := findAll(doc, elem("data", class))
		if len(d) == 0 {
			return "", false
		}
		return attr(d[0], "value"), true
	}
	if v, ok := dataValue("count"); !ok || v != strconv.FormatInt(want.Table.Count, 10) {
		t.Errorf("count data value %q (found %v), JSON count %d", v, ok, want.Table.Count)
	}
	has("count", thousands(want.Table.Count))
	if want.Table.Max > 0 {
		if v, _ := dataValue("max"); v != strconv.FormatInt(want.Table.Max, 10) {
			t.Errorf("max data value %q, JSON max %d", v, want.Table.Max)
		}
		has("max", thousands(want.Table.Max))
		v, _ := dataValue("usage")
		if u, err := strconv.ParseFloat(v, 64); err != nil || u != want.Table.Usage {
			t.Errorf("usage data value %q, JSON usage %v", v, want.Table.Usage)
		}
		pct := findAll(doc, elem("span", "pct"))
		if len(pct) != 1 || rawText(pct[0]) != wantPct(want.Table.Usage) {
			t.Errorf("usage shown as %v, want %s (usage %v)", pct, wantPct(want.Table.Usage), want.Table.Usage)
		} else {
			t.Logf("usage %v shown as %s; count %d of %d", want.Table.Usage, rawText(pct[0]), want.Table.Count, want.Table.Max)
		}
	}

	// Counters: name and value, as in .stats.
	if avail, _ := want.Stats["available"].(bool); avail {
		got := map[string]string{}
		for _, c := range findAll(doc, elem("div", "counter")) {
			names, vals := findAll(c, elem("span", "name")), findAll(c, elem("data", "value"))
			if len(names) != 1 || len(vals) != 1 {
				t.Fatalf("a counter without one name and one value")
			}
			got[rawText(names[0])] = attr(vals[0], "value")
			if rawText(vals[0]) != thousands(mustInt(t, attr(vals[0], "value"))) {
				t.Errorf("counter %s shown as %q, value %s", rawText(names[0]), rawText(vals[0]), attr(vals[0], "value"))
			}
		}
		for _, name := range []string{"drop", "early_drop", "insert_failed", "clash_resolve", "chaintoolong", "invalid"} {
			if w := fmt.Sprint(want.Stats[name]); got[name] != w {
				t.Errorf("counter %s = %q, JSON %s", name, got[name], w)
			}
		}
	}
	if want.Log.TableFullEvents > 0 {
		has("kernel log events", fmt.Sprintf("%s \"table full, dropping packet\" events (+%d suppressed)", thousands(int64(want.Log.TableFullEvents)), want.Log.Suppressed))
	}

	// Findings.
	if len(want.Findings) == 0 {
		has("no findings", "No findings")
	}
	for _, f := range want.Findings {
		arts := findAll(doc, func(n *html.Node) bool { return elem("article", "finding")(n) && attr(n, "id") == "finding-"+f.ID })
		if len(arts) != 1 {
			t.Errorf("finding %s: %d articles", f.ID, len(arts))
			continue
		}
		a := arts[0]
		if ids := findAll(a, elem("code", "id")); len(ids) != 1 || rawText(ids[0]) != f.ID {
			t.Errorf("finding %s: id not shown", f.ID)
		}
		if !strings.Contains(pageText(a), squash(f.Summary)) || !strings.Contains(pageText(a), strings.ToUpper(f.Severity)) {
			t.Errorf("finding %s: summary or severity missing", f.ID)
		}
		var keys []string
		for _, dt := range findAll(a, elem("dt")) {
			keys = append(keys, rawText(dt))
		}
		for k := range f.Evidence {
			if !slices.Contains(keys, k) {
				t.Errorf("finding %s: evidence %s not shown (shown: %v)", f.ID, k, keys)
			}
		}
		// The fix lines, in order: comments as notes, commands exactly.
		var got, wantLines []string
		for n := range a.Descendants() {
			switch {
			case elem("pre", "cmd")(n):
				codes := findAll(n, elem("code"))
				if len(codes) != 1 {
					t.Fatalf("finding %s: a command block holds %d <code>", f.ID, len(codes))
				}
				got = append(got, "$ "+rawText(codes[0]))
			case elem("p", "fix-note")(n):
				got = append(got, "# "+rawText(n))
			}
		}
		for _, fx := range f.Fixes {
			if strings.HasPrefix(fx, "#") {
				wantLines = append(wantLines, "# "+strings.TrimSpace(strings.TrimPrefix(fx, "#")))
				continue
			}
			wantLines = append(wantLines, "$ "+fx)
		}
		if !slices.Equal(got, wantLines) {
			t.Errorf("finding %s: fix lines\n got %q\nwant %q", f.ID, got, wantLines)
		}
	}
	for _, w := range want.Warnings {
		has("warning", w)
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// Whatever a report holds is text on the page: markup in a hostname,
// summary, evidence, fix or warning is shown as written and never
// becomes an element or an attribute; a command keeps its <, > and &.
func TestHTMLEscapes(t *testing.T) {
	evil := `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	cmd := `nft add rule inet filter input tcp dport 80 ct state new counter && echo "<ok>" > /tmp/x & true`
	r := sample()
	r.Host.Hostname = evil
	r.Verdict.Reason = evil
	r.Findings[0].ID = `x" onclick="alert(3)`
	r.Findings[0].Summary = evil
	r.Findings[0].Evidence = map[string]any{evil: evil, "list": []string{evil, "b"}, "map": map[string]int{"<k>": 1}}
	r.Findings[0].Fixes = []string{"# " + evil, cmd, "javascript:alert(4)"}
	r.Warnings = []string{evil}
	r.Breakdown.Total = 1
	r.Breakdown.TopSources = []analyze.AddrCount{{Addr: evil, Count: 1}}
	page := renderHTML(t, r, HTMLOptions{Title: evil})
	checkBalanced(t, page)
	doc := parseHTML(t, page)
	checkSelfContained(t, doc)
	var cmds []string
	for _, c := range findAll(doc, elem("pre", "cmd")) {
		cmds = append(cmds, rawText(c))
	}
	if !slices.Equal(cmds, []string{cmd, "javascript:alert(4)"}) {
		t.Errorf("commands %q", cmds)
	}
	text := pageText(doc)
	if n := strings.Count(text, squash(evil)); n < 6 {
		t.Errorf("the hostile text shows %d times as text, want it in the title, host, verdict, summary, evidence, note, source and warning", n)
	}
	if !strings.Contains(text, "<k>=1") {
		t.Error("a map in the evidence is not shown as key=value")
	}
}

// The page for a report with no size (no conntrack), an empty table and
// a listing read from a file renders, with what is not known said so.
func TestHTMLUnknowns(t *testing.T) {
	none := analyze.NoConntrack("/", "", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	page := renderHTML(t, none, HTMLOptions{})
	checkBalanced(t, page)
	text := pageText(parseHTML(t, page))
	for _, s := range []string{"The table's size is not known.", "No findings", none.Warnings[0], "generated 2026-01-02 03:04:05 UTC"} {
		if !strings.Contains(text, s) {
			t.Errorf("%q not in %q", s, text)
		}
	}
	file := sample()
	file.Host = analyze.HostInfo{NetNS: "listing.txt", Source: "file"}
	file.Table = analyze.TableInfo{Count: 10, Max: -1, Listed: 10}
	text = pageText(parseHTML(t, renderHTML(t, file, HTMLOptions{})))
	for _, s := range []string{"entries from listing.txt (a listing only", "10 entries; the limit is not known."} {
		if !strings.Contains(text, s) {
			t.Errorf("%q not in %q", s, text)
		}
	}
	if err := HTML(&bytes.Buffer{}, nil, HTMLOptions{}); err == nil {
		t.Error("no report and no simulation: want an error")
	}
}

// A simulation's page: its verdict and the timeline as inline SVG come
// before the diagnosis of the table; without a report the page is the
// run alone.
func TestHTMLSimulation(t *testing.T) {
	sim := sampleSimulation()
	page := renderHTML(t, sample(), HTMLOptions{Simulation: sim})
	checkBalanced(t, page)
	doc := parseHTML(t, page)
	checkSelfContained(t, doc)
	svgs := findAll(doc, elem("svg"))
	chart := findAll(doc, elem("section", "chart"))
	verdicts := findAll(doc, elem("section", "verdict"))
	if len(chart) != 1 || len(findAll(chart[0], elem("polyline"))) != 1 || len(svgs) < 2 {
		t.Fatalf("the timeline is not an inline SVG chart: %d chart sections, %d svgs", len(chart), len(svgs))
	}
	if len(verdicts) != 2 || !strings.Contains(rawText(verdicts[0]), sim.Verdict) || !strings.Contains(rawText(verdicts[1]), sample().Verdict.Reason) {
		t.Fatalf("want the run's verdict, then the diagnosis's")
	}
	text := pageText(doc)
	if i, j := strings.Index(text, "demo · seed 1"), strings.Index(text, "Diagnosis of the simulated table"); i < 0 || j < i {
		t.Errorf("the chart (at %d) must come before the diagnosis (at %d)", i, j)
	}
	alone := renderHTML(t, nil, HTMLOptions{Simulation: sim})
	checkBalanced(t, alone)
	if d := parseHTML(t, alone); len(findAll(d, elem("polyline"))) != 1 || strings.Contains(pageText(d), "Findings") {
		t.Error("a simulation alone: want its chart and no report")
	}
}

func sampleSimulation() *HTMLSimulation {
	return &HTMLSimulation{Title: "ctdoctor simulate demo", Level: analyze.Critical, Label: "FULL",
		Verdict: "table full at 00:01:40, 12 packets dropped", Facts: []string{"peak 10 of 10 at 00:01:40"},
		Chart: &Chart{Title: "entries", Times: []float64{0, 60, 120}, Series: []Series{{Name: "total", Values: []float64{0, 10, 10}}},
			Limit: 10, LimitLabel: "nf_conntrack_max 10", Marks: []bool{false, true, true}, MarkLabel: "drops"},
		ChartSubtitle: "demo · seed 1"}
}

// centos5Plan is the plan for the CentOS 5 test host, with a prediction.
func centos5Plan(t *testing.T) *tune.Plan {
	t.Helper()
	root := filepath.Join("..", "host", "testdata", "hosts", "centos5")
	in := doctor.Input{Root: root}
	res, err := doctor.Run(context.Background(), in, doctor.Options{Top: 10})
	if err != nil {
		t.Fatal(err)
	}
	p, err := doctor.Plan(context.Background(), in, res, doctor.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Prediction = &tune.Prediction{Duration: 600, Verdict: "the change prevents the drops",
		Before: tune.PredictionState{PeakEntries: 16640, Max: 16640, PeakUsage: 1, Drops: 1234},
		After:  tune.PredictionState{PeakEntries: 36271, Max: 131072, PeakUsage: 36271.0 / 131072}}
	return p
}

// A plan's page shows every step with its exact commands, the global
// steps apart, what was not planned and the prediction.
func TestPlanHTML(t *testing.T) {
	p := centos5Plan(t)
	if len(p.Steps)+len(p.GlobalSteps) == 0 || len(p.Skipped) == 0 {
		t.Fatalf("the CentOS 5 plan should have steps and a skipped NOTRACK: %+v", p)
	}
	var b bytes.Buffer
	if err := PlanHTML(&b, p, HTMLOptions{}); err != nil {
		t.Fatal(err)
	}
	checkBalanced(t, b.Bytes())
	doc := parseHTML(t, b.Bytes())
	checkSelfContained(t, doc)
	var cmds []string
	for _, c := range findAll(doc, elem("pre", "cmd")) {
		cmds = append(cmds, rawText(c))
	}
	var want []string
	for _, s := range append(slices.Clone(p.Steps), p.GlobalSteps...) {
		for _, c := range s.Commands {
			if !strings.HasPrefix(c, "#") {
				want = append(want, c)
			}
		}
	}
	if !slices.Equal(cmds, want) {
		t.Errorf("plan commands\n got %q\nwant %q", cmds, want)
	}
	text := pageText(doc)
	for _, s := range []string{p.ID, p.Skipped[0].Reason, "16,640 of 16,640 (100%)", "36,271 of 131,072 (28%)", "1,234", "the change prevents the drops", "10 min"} {
		if !strings.Contains(text, squash(s)) {
			t.Errorf("%q not in the plan's page", s)
		}
	}
	for _, s := range append(slices.Clone(p.Steps), p.GlobalSteps...) {
		if !strings.Contains(text, squash(s.Title)) {
			t.Errorf("step %q not shown", s.Title)
		}
	}
	if err := PlanHTML(&b, nil, HTMLOptions{}); err == nil {
		t.Error("nil plan: want an error")
	}
}
