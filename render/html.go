package render

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/tune"
)

// The HTML report is one self-contained file: the stylesheet is inlined,
// charts, bars and the gauge are inline SVG, and it has no script, font,
// image or link to fetch. html/template escapes every value from the
// report; the only markup inserted as is comes from this package (the
// stylesheet and SVG's output, which escapes its text itself).

//go:embed html.tmpl html.css
var htmlAssets embed.FS

var htmlTemplate = template.Must(template.New("html.tmpl").ParseFS(htmlAssets, "html.tmpl"))

// HTMLOptions control the HTML report.
type HTMLOptions struct {
	// Title is the page's title; "" names the report and the host.
	Title string
	// Simulation, when set, is shown above the report: a simulated run
	// with its timeline, the report being the diagnosis of its table.
	Simulation *HTMLSimulation
}

// HTMLSimulation is a simulated run as the HTML report shows it above the
// diagnosis of the table it left.
type HTMLSimulation struct {
	Title   string // "ctdoctor simulate nginx-local-upstream"
	Level   string // the verdict's colour: analyze.Healthy, Warning or Critical
	Label   string // the verdict's tag ("FULL", "OK")
	Verdict string // the run's verdict, word for word
	// Description is the scenario's description (prose).
	Description string
	// Facts are short lines of the run's summary ("peak 16,384 of 16,384 at 00:01:40").
	Facts []string
	// Chart is the timeline, drawn with SVG; nil draws none.
	Chart         *Chart
	ChartSubtitle string
}

// HTML writes the report as one self-contained HTML page: the verdict, a
// usage gauge, the table, counters and kernel log, the breakdown as bar
// charts, the findings with their evidence and their fixes (each command
// in a block of its own, exactly the text of the report's fixes) and the
// warnings. It reads on a phone and prints. rep may be nil only when
// o.Simulation is set (a simulated run without its diagnosis).
func HTML(w io.Writer, rep *analyze.Report, o HTMLOptions) error {
	if rep == nil && o.Simulation == nil {
		return errors.New("html: no report to render")
	}
	v := htmlPage{Title: o.Title}
	if rep != nil {
		v.Report = reportView(rep)
		v.Generated = rep.GeneratedAt
		if v.Title == "" {
			v.Title = "ctdoctor report · " + orDash(rep.Host.Hostname)
		}
	}
	if s := o.Simulation; s != nil {
		sv, err := simulationView(s)
		if err != nil {
			return err
		}
		v.Sim = sv
		if v.Title == "" {
			v.Title = s.Title
		}
	}
	return v.write(w)
}

// PlanHTML writes a plan as one self-contained HTML page: each step with
// the finding that motivates it and its evidence, current → proposed,
// scope, persistence, cost and the exact commands; the global part apart
// when the plan does not include it; what was not planned and why; the
// simulated effect.
func PlanHTML(w io.Writer, p *tune.Plan, o HTMLOptions) error {
	if p == nil {
		return errors.New("html: no plan to render")
	}
	v := htmlPage{Title: o.Title, Plan: planView(p), Generated: p.CreatedAt}
	if v.Title == "" {
		v.Title = "ctdoctor plan · " + orDash(p.Host.Hostname)
	}
	return v.write(w)
}

// htmlPage is what the template renders: a report, a plan, or a
// simulation with or without its report.
type htmlPage struct {
	Title     string
	Generated time.Time
	Report    *htmlReport
	Plan      *htmlPlan
	Sim       *htmlSim
}

func (v *htmlPage) write(w io.Writer) error {
	css, err := htmlAssets.ReadFile("html.css")
	if err != nil {
		return err
	}
	data := struct {
		*htmlPage
		CSS       template.CSS
		Generated string
	}{v, template.CSS(css), ""}
	if !v.Generated.IsZero() {
		data.Generated = v.Generated.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	var b bytes.Buffer
	if err := htmlTemplate.Execute(&b, data); err != nil {
		return fmt.Errorf("html: %w", err)
	}
	_, err = w.Write(b.Bytes())
	return err
}

type htmlReport struct {
	Host     []string // "server", "kernel 2.6.18", …
	FileNote string   // a listing only: what is not known
	Level    string
	Label    string
	Reason   string

	Table     analyze.TableInfo
	HasTable  bool // the size is known
	Count     string
	Max       string
	Pct       string
	Gauge     gaugeView
	TableFact []fact

	Stats        analyze.StatsInfo
	Counters     []counterView
	CounterNote  string
	Log          analyze.LogInfo
	LogEvents    string
	LogNetNS     []string
	LogNone      string
	NoBreakdown  string
	Sections     []sectionView
	NSTitle      string
	Namespaces   []nsView
	Findings     []findingView
	Warnings     []string
	FindingsHead string
}

type fact struct{ Label, Value string }

type gaugeView struct {
	Level string
	Fill  string // percent of the bar, 0–100
	Over  bool   // the count is above the max
	Marks []gaugeMark
}

type gaugeMark struct{ X, Label string }

type counterView struct {
	Name  string
	Value uint64
	N     string // formatted
	Rate  string
	Bad   bool
}

type sectionView struct {
	Title string
	Rows  []rowView
}

type rowView struct {
	Key   string
	Count int64
	N     string // formatted count
	Fill  string // the bar, 0–100
	Share string
}

type nsView struct {
	Name, Inode, N, Fill, Share, Level, Error string
	Count                                     int64
}

type findingView struct {
	ID, Severity, Label, Summary, Explanation string
	Evidence                                  []evidenceView
	Fixes                                     []fixView
}

type evidenceView struct {
	Key   string
	Value string   // a scalar, or a map as key=value words
	Items []string // a list, one element an item
}

// fixView is one line of a fix: a note (a comment, without its "#") or
// a command to run, exactly as the report has it.
type fixView struct{ Note, Command string }

func levelLabel(level string) string { return strings.ToUpper(level) }

// usageLevel is the gauge's colour: the text report's thresholds.
func usageLevel(u float64) string {
	switch {
	case u >= 0.9:
		return analyze.Critical
	case u >= 0.75:
		return analyze.Warning
	}
	return analyze.Healthy
}

// fill is a share as a bar's length in percent, 0 to 100, for SVG.
func fill(share float64) string {
	return fmt.Sprintf("%.2f", min(max(share, 0), 1)*100)
}

func reportView(r *analyze.Report) *htmlReport {
	v := &htmlReport{Level: r.Verdict.Level, Label: levelLabel(r.Verdict.Level), Reason: r.Verdict.Reason,
		Table: r.Table, Stats: r.Stats, Log: r.Log, Warnings: r.Warnings}
	h := r.Host
	if h.Source == "file" {
		v.FileNote = fmt.Sprintf("entries from %s (a listing only: the host's table size, counters and kernel log are not known)", h.NetNS)
	} else {
		ns := h.NetNS
		if h.NetNSInode != 0 {
			ns = fmt.Sprintf("%s [%d]", ns, h.NetNSInode)
		}
		v.Host = []string{orDash(h.Hostname), "kernel " + orDash(h.Kernel), "netns " + ns,
			fmt.Sprintf("%d CPUs", h.CPUs), human(int64(h.MemBytes)) + " RAM", "entries from " + orDash(h.Source)}
	}
	tb := r.Table
	v.HasTable = tb.Max > 0 && tb.Count >= 0
	v.Count, v.Max, v.Pct = num(tb.Count), num(tb.Max), pctStr(tb.Usage)
	v.Gauge = gaugeView{Level: usageLevel(tb.Usage), Fill: fill(tb.Usage), Over: tb.Usage > 1,
		Marks: []gaugeMark{{"75", "75%"}, {"90", "90%"}}}
	if tb.Buckets > 0 {
		v.TableFact = append(v.TableFact,
			fact{"Buckets", fmt.Sprintf("%s (%.2f entries/bucket)", num(tb.Buckets), tb.EntriesPerBucket)},
			fact{"Memory", fmt.Sprintf("%s now, %s when full (%s/entry)", human(tb.MemoryBytes), human(tb.MemoryAtMaxBytes), human(perEntry(tb)))})
	}
	if tb.DefaultMax > 0 {
		v.TableFact = append(v.TableFact, fact{"Kernel default", fmt.Sprintf("%s buckets / %s max for this RAM%s",
			num(tb.DefaultBuckets), num(tb.DefaultMax), ifs(tb.Legacy, " (legacy ip_conntrack)"))})
	}
	if tb.Listed > 0 && tb.Listed != tb.Count {
		v.TableFact = append(v.TableFact, fact{"Listed", num(tb.Listed) + " entries read"})
	}
	s := r.Stats
	if s.Available {
		for _, c := range []struct {
			name string
			v    uint64
			bad  bool
		}{{"drop", s.Drop, true}, {"early_drop", s.EarlyDrop, false}, {"insert_failed", s.InsertFailed, true},
			{"clash_resolve", s.ClashResolve, false}, {"chaintoolong", s.ChainTooLong, true}, {"invalid", s.Invalid, false}} {
			cv := counterView{Name: c.name, Value: c.v, N: num(int64(c.v)), Bad: c.bad && c.v > 0}
			if rt, ok := s.PerSecond[c.name]; ok && rt > 0 {
				cv.Rate = fmt.Sprintf("%.1f/s", rt)
			}
			v.Counters = append(v.Counters, cv)
		}
		v.CounterNote = "from " + s.Source + ifs(s.Interval > 0, fmt.Sprintf(", rates over %.1f s", s.Interval))
	}
	l := r.Log
	switch {
	case l.TableFullEvents > 0:
		v.LogEvents = fmt.Sprintf("%s \"table full, dropping packet\" events (+%d suppressed), first %s, last %s",
			num(int64(l.TableFullEvents)), l.Suppressed, orDash(l.First), orDash(l.Last))
		for _, n := range l.NetNS {
			label := n.Label()
			v.LogNetNS = append(v.LogNetNS, fmt.Sprintf("netns %d%s: %d", n.Inode, ifs(label != "", " ("+label+")"), n.Count))
		}
	case l.Source != "":
		v.LogNone = fmt.Sprintf("no \"table full\" events in %s", l.Source)
	}
	v.breakdown(r)
	v.namespaces(r)
	if len(r.Findings) == 0 {
		v.FindingsHead = "No findings"
	} else {
		v.FindingsHead = fmt.Sprintf("Findings (%d)", len(r.Findings))
	}
	for _, f := range r.Findings {
		v.Findings = append(v.Findings, findingView{ID: f.ID, Severity: f.Severity, Label: levelLabel(f.Severity),
			Summary: f.Summary, Explanation: f.Explanation, Evidence: evidenceViews(f.Evidence), Fixes: fixViews(f.Fixes)})
	}
	return v
}

// breakdown builds the same tables as the text report, in its order.
func (v *htmlReport) breakdown(r *analyze.Report) {
	bd := r.Breakdown
	if bd.Total <= 0 {
		v.NoBreakdown = noBreakdown(r)
		return
	}
	for _, s := range breakdownSections(bd) {
		sv := sectionView{Title: s.title}
		for _, rw := range s.rows {
			share := float64(rw.v) / float64(bd.Total)
			sv.Rows = append(sv.Rows, rowView{Key: rw.k, Count: rw.v, N: num(rw.v), Fill: fill(share), Share: pctStr(share)})
		}
		v.Sections = append(v.Sections, sv)
	}
}

func (v *htmlReport) namespaces(r *analyze.Report) {
	if len(r.Namespaces) == 0 {
		return
	}
	v.NSTitle = fmt.Sprintf("Network namespaces (%d)", len(r.Namespaces))
	for _, n := range r.Namespaces {
		nv := nsView{Name: n.Name, Inode: fmt.Sprint(n.Inode), Count: n.Count, N: num(n.Count), Error: n.Error}
		u := 0.0
		if n.Max > 0 {
			u = float64(n.Count) / float64(n.Max)
		}
		nv.Fill, nv.Share, nv.Level = fill(u), pctStr(u), usageLevel(u)
		v.Namespaces = append(v.Namespaces, nv)
	}
}

// evidenceViews lays out a finding's evidence as the text report does:
// scalars as they are, maps as key=value words, lists one element a line.
func evidenceViews(ev map[string]any) []evidenceView {
	var out []evidenceView
	for _, k := range slices.Sorted(maps.Keys(ev)) {
		switch x := normalize(ev[k]).(type) {
		case []any:
			e := evidenceView{Key: k}
			for _, it := range x {
				e.Items = append(e.Items, evValue(it, true))
			}
			if len(x) == 0 {
				e.Value = "[]"
			}
			out = append(out, e)
		case map[string]any:
			if len(x) == 0 {
				out = append(out, evidenceView{Key: k, Value: "{}"})
				continue
			}
			out = append(out, evidenceView{Key: k, Value: evValue(x, true)})
		default:
			out = append(out, evidenceView{Key: k, Value: evValue(x, false)})
		}
	}
	return out
}

// fixViews splits fix lines into notes (comments) and commands. A command
// keeps its exact text, so that what is copied is what the JSON report
// and the text report say.
func fixViews(fixes []string) []fixView {
	var out []fixView
	for _, fx := range fixes {
		if strings.HasPrefix(fx, "#") {
			out = append(out, fixView{Note: strings.TrimSpace(strings.TrimPrefix(fx, "#"))})
			continue
		}
		out = append(out, fixView{Command: fx})
	}
	return out
}

type htmlPlan struct {
	Host        []string
	ID          string
	Intro       string
	Empty       bool
	Steps       []stepView
	GlobalSteps []stepView
	Skipped     []tune.Skipped
	Prediction  *predictionView
}

type stepView struct {
	N                            int
	Title, Finding, Reason       string
	Evidence                     []evidenceView
	Change, Scope, Persist, Cost string
	Commands                     []fixView
}

type predictionView struct {
	Duration      string
	Verdict       string
	Before, After predictionState
	NotSimulated  []string
}

type predictionState struct {
	Peak, Max, Pct, Fill, Level, Drops, EarlyDrops string
}

func planView(p *tune.Plan) *htmlPlan {
	ns := p.Host.NetNS
	if ns == "" {
		ns = "init"
	}
	v := &htmlPlan{Host: []string{orDash(p.Host.Hostname), "kernel " + orDash(p.Host.Kernel), "netns " + ns},
		ID: p.ID, Empty: p.Empty(), Skipped: p.Skipped}
	local, global := len(p.Steps), len(p.GlobalSteps)
	switch {
	case p.Empty():
		v.Intro = "Nothing to do. The findings propose no change that is not already in place."
	case p.Global:
		g := 0
		for _, s := range p.Steps {
			if s.Scope == tune.ScopeGlobal {
				g++
			}
		}
		v.Intro = fmt.Sprintf("%d steps (%d for the whole host).", len(p.Steps), g)
	case local == 0:
		v.Intro = fmt.Sprintf("Nothing to do in this namespace; %d steps for the whole host, listed apart: run them on the host itself, or plan with --global.", global)
	default:
		v.Intro = fmt.Sprintf("%d steps in this namespace; %d more for the whole host, listed apart: apply applies them only with --global, from the initial namespace.", local, global)
	}
	n := 0
	shown := map[string]bool{}
	step := func(s tune.Step) stepView {
		n++
		sv := stepView{N: n, Title: s.Title, Finding: s.Finding, Reason: s.Reason, Persist: s.Persist,
			Scope: "this network namespace", Commands: fixViews(s.Commands)}
		if s.Scope == tune.ScopeGlobal {
			sv.Scope = "the whole host"
		}
		if len(s.Evidence) > 0 && !shown[s.Finding] {
			shown[s.Finding] = true
			sv.Evidence = evidenceViews(s.Evidence)
		}
		if oneLine(s.Current) && oneLine(s.Proposed) {
			sv.Change = s.Current + " → " + s.Proposed
		}
		if s.CostBytes > 0 {
			sv.Cost = "up to " + analyze.HumanBytes(s.CostBytes) + " of kernel memory when the table is full"
		}
		return sv
	}
	for _, s := range p.Steps {
		v.Steps = append(v.Steps, step(s))
	}
	for _, s := range p.GlobalSteps {
		v.GlobalSteps = append(v.GlobalSteps, step(s))
	}
	if pr := p.Prediction; pr != nil {
		state := func(s tune.PredictionState) predictionState {
			return predictionState{Peak: num(s.PeakEntries), Max: num(s.Max), Pct: pctStr(s.PeakUsage), Fill: fill(s.PeakUsage),
				Level: usageLevel(s.PeakUsage), Drops: num(int64(s.Drops)), EarlyDrops: num(int64(s.EarlyDrops))}
		}
		v.Prediction = &predictionView{Duration: secondsWords(pr.Duration), Verdict: pr.Verdict,
			Before: state(pr.Before), After: state(pr.After), NotSimulated: pr.NotSimulated}
	}
	return v
}

type htmlSim struct {
	*HTMLSimulation
	SVG template.HTML
}

func simulationView(s *HTMLSimulation) (*htmlSim, error) {
	c := *s
	if c.Level == "" {
		c.Level = analyze.Healthy
	}
	v := &htmlSim{HTMLSimulation: &c}
	if s.Chart != nil && len(s.Chart.Times) > 0 {
		var b bytes.Buffer
		// Smaller than --svg's 960 × 480: its text stays readable when the
		// page shrinks it to a phone's width.
		if err := SVG(&b, *s.Chart, SVGOptions{Width: 720, Height: 420, Subtitle: s.ChartSubtitle}); err != nil {
			return nil, fmt.Errorf("html: %w", err)
		}
		// SVG escapes every text it writes (xml.EscapeText): trusted markup.
		v.SVG = template.HTML(b.String())
	}
	return v, nil
}
