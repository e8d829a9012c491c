package cli

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/sim"
)

func paint(on bool, code, s string) string {
	if !on || s == "" || code == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

const (
	red    = "1;31"
	yellow = "1;33"
	green  = "1;32"
	bold   = "1"
	dim    = "2"
)

func wrapText(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len([]rune(line))+1+len([]rune(w)) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return lines
}

// labelW is the label column of the text outputs ("Workloads" and a blank).
const labelW = 11

// textLines lays out simulate's text outputs: labels padded by the columns
// they show (escape codes take none), no line wider than width.
type textLines struct {
	b     strings.Builder
	color bool
	width int
}

func newTextLines(color bool, width int) *textLines { return &textLines{color: color, width: width} }

// label is a bold label padded to the label column.
func (t *textLines) label(name string) string { return render.Pad(paint(t.color, bold, name), labelW) }

// line writes one line as it is (without trailing blanks).
func (t *textLines) line(s string) {
	t.b.WriteString(strings.TrimRight(s, " "))
	t.b.WriteByte('\n')
}

func (t *textLines) blank() { t.b.WriteByte('\n') }

// fields writes tokens joined by sep after first, wrapped between tokens
// onto lines that start with cont; a token too wide for a line is broken
// at its blanks.
func (t *textLines) fields(first, cont, sep string, toks ...string) {
	fw, cw := render.VisibleWidth(first), render.VisibleWidth(cont)
	room := t.width - max(fw, cw)
	var fitted []string
	for _, tok := range toks {
		if render.VisibleWidth(tok) > room {
			fitted = append(fitted, layLines(splitWords(tok, room), " ", room, room)...)
			continue
		}
		fitted = append(fitted, tok)
	}
	for i, l := range layLines(fitted, sep, t.width-fw, t.width-cw) {
		if i == 0 {
			t.line(first + l)
		} else {
			t.line(cont + l)
		}
	}
}

// prose writes text wrapped at blanks after first (then cont), each line
// painted with code ("" for none).
func (t *textLines) prose(first, cont, text, code string) {
	fw, cw := render.VisibleWidth(first), render.VisibleWidth(cont)
	words := splitWords(text, t.width-max(fw, cw))
	for i, l := range layLines(words, " ", t.width-fw, t.width-cw) {
		if i == 0 {
			t.line(first + paint(t.color, code, l))
		} else {
			t.line(cont + paint(t.color, code, l))
		}
	}
}

// splitWords splits plain text at blanks, and a word wider than room into
// pieces of room columns.
func splitWords(s string, room int) []string {
	room = max(room, 8)
	var out []string
	for _, w := range strings.Fields(s) {
		for render.VisibleWidth(w) > room && !strings.Contains(w, "\x1b") {
			r := []rune(w)
			out = append(out, string(r[:room]))
			w = string(r[room:])
		}
		out = append(out, w)
	}
	return out
}

// layLines joins pieces with sep into lines of at most firstW columns (the
// first) and restW (the others); a piece wider than a line has one alone.
func layLines(pieces []string, sep string, firstW, restW int) []string {
	var lines []string
	cur, curW, room := "", 0, firstW
	sw := render.VisibleWidth(sep)
	for _, p := range pieces {
		pw := render.VisibleWidth(p)
		if cur != "" && curW+sw+pw > room {
			lines = append(lines, cur)
			cur, curW, room = "", 0, restW
		}
		if cur != "" {
			cur += sep
			curW += sw
		}
		cur += p
		curW += pw
	}
	if cur != "" || len(lines) == 0 {
		lines = append(lines, cur)
	}
	return lines
}

// verdictLine writes a coloured tag and the bold verdict after it, the
// verdict wrapped under itself.
func (t *textLines) verdictLine(tag, verdict string) {
	first := tag + " "
	t.prose(first, strings.Repeat(" ", render.VisibleWidth(first)), verdict, bold)
}

// writeHeading writes a bold heading wrapped at width, between blank lines.
func writeHeading(w io.Writer, text string, color bool, width int) {
	t := newTextLines(color, width)
	t.blank()
	t.prose("", "", text, bold)
	t.blank()
	_, _ = io.WriteString(w, t.b.String())
}

// verdictLabel is the coloured tag in front of a run's verdict: its cause.
func verdictLabel(r *sim.Result, color bool) string {
	switch r.Cause() {
	case sim.CauseTableFull:
		return paint(color, red, " FULL    ")
	case sim.CauseChainTooLong:
		return paint(color, red, " HASH CHAINS TOO LONG ")
	case sim.CauseFullNoDrops:
		return paint(color, yellow, " FULL, NO DROPS ")
	case sim.CauseNearFull:
		return paint(color, yellow, " NEAR FULL ")
	}
	return paint(color, green, " OK      ")
}

// dropCause says why the first dropped packet was dropped.
func dropCause(r *sim.Result) string {
	switch {
	case r.FirstDrop < 0:
		return ""
	case r.FirstDrop == r.FirstChainDrop:
		return " (hash chain too long)"
	}
	return " (table full)"
}

func speedup(virtual, wall time.Duration) string {
	if wall <= 0 {
		return ""
	}
	x := virtual.Seconds() / wall.Seconds()
	return fmt.Sprintf(" (%s× real time)", sim.Thousands(int64(math.Round(x))))
}

// changedSettings lists the scenario's settings that differ from the
// kernel defaults.
func changedSettings(set map[string]int64) []string {
	def := engine.DefaultSettings()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if def[k] != set[k] {
			parts = append(parts, fmt.Sprintf("%s=%d", k, set[k]))
		}
	}
	if len(parts) == 0 {
		return []string{fmt.Sprintf("kernel defaults (%s=%d)", engine.SetMax, def[engine.SetMax])}
	}
	return parts
}

type countRow struct {
	name string
	n    int
}

// stateRows lists a sample's entries by TCP state and protocol, biggest first.
func stateRows(s sim.Sample) []countRow {
	var rows []countRow
	for _, st := range sim.StateNames {
		if s.TCP[st] > 0 {
			rows = append(rows, countRow{st.String(), s.TCP[st]})
		}
	}
	for _, r := range []countRow{{"udp", s.UDP}, {"icmp", s.ICMP}, {"other", s.Other}} {
		if r.n > 0 {
			rows = append(rows, r)
		}
	}
	slices.SortStableFunc(rows, func(a, b countRow) int { return cmp.Compare(b.n, a.n) })
	return rows
}

func barText(frac float64, width int) string {
	cells := frac * float64(width) * 8
	full := int(cells / 8)
	var b strings.Builder
	b.WriteString(strings.Repeat("█", min(full, width)))
	if rest := int(cells) % 8; rest > 0 && full < width {
		b.WriteRune([]rune(" ▏▎▍▌▋▊▉")[rest])
	}
	return b.String()
}

func writeSimText(w io.Writer, r *sim.Result, sc *sim.Scenario, wall time.Duration, color bool, width int) error {
	t := newTextLines(color, width)
	th := func(n int) string { return sim.Thousands(int64(n)) }
	t.fields("", "  ", " · ", paint(color, bold, "ctdoctor simulate"), r.Scenario,
		fmt.Sprintf("%s of virtual time in %.1f s%s", r.Duration, wall.Seconds(), speedup(r.Duration, wall)), fmt.Sprintf("seed %d", r.Seed))
	if r.Description != "" {
		t.prose("", "", r.Description, dim)
	}
	t.blank()
	t.verdictLine(verdictLabel(r, color), r.Verdict())
	t.blank()

	usage := func(n int) string {
		if r.Max <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(n)*100/float64(r.Max))
	}
	pad := strings.Repeat(" ", labelW)
	t.fields(t.label("Table"), pad, " · ", "max "+th(r.Max), "buckets "+th(int(r.Settings[engine.SetBuckets])),
		fmt.Sprintf("peak %s%s at %s", th(r.Peak), usage(r.Peak), sim.Clock(r.PeakAt)))
	t.prose(t.label("Steady"), pad, fmt.Sprintf("%s entries%s, the mean over the last %s", th(r.Steady.Total),
		usage(r.Steady.Total), (r.Duration/10).Round(time.Second)), "")
	rows := stateRows(r.Steady)
	nw := 0
	for _, row := range rows {
		nw = max(nw, len(row.name))
	}
	for _, row := range rows {
		frac := float64(row.n) / float64(max(r.Steady.Total, 1))
		share := fmt.Sprintf("%.0f%%", frac*100)
		if frac < 0.005 {
			share = "<1%"
		}
		t.line(fmt.Sprintf("%s  %-*s %9s %4s %s", pad, nw, row.name, th(row.n), share, barText(frac, 20)))
	}
	t.fields(pad+"  ", pad+"  ", " · ", "assured "+th(r.Steady.Assured), "unreplied "+th(r.Steady.Unreplied))
	ctr := func(name string, v uint64) string {
		s := fmt.Sprintf("%s %s", name, sim.Thousands(int64(v)))
		if v > 0 && name != "early_drop" {
			return paint(color, red, s)
		}
		return s
	}
	t.fields(t.label("Counters"), pad, " · ", ctr("drop", r.Drop), ctr("early_drop", r.EarlyDrop),
		ctr("insert_failed", r.InsertFailed), ctr("chaintoolong", r.ChainTooLong))
	if r.FirstDrop >= 0 {
		t.prose(pad, pad, fmt.Sprintf("first drop at %s%s", sim.Clock(r.FirstDrop), dropCause(r)), "")
	}
	t.fields(t.label("Traffic"), pad, " · ", sim.Thousands(int64(r.Connections))+" connections",
		sim.Thousands(int64(r.Packets))+" packets", sim.Thousands(int64(r.Retransmits))+" retransmitted")
	if r.Failed > 0 {
		t.prose(pad, pad, sim.Thousands(int64(r.Failed))+" connections failed: conntrack dropped their packets until they gave up", red)
	}
	if r.Lost > 0 {
		t.prose(pad, pad, sim.Thousands(int64(r.Lost))+" connections lost silently to the middlebox (no FIN, no RST)", "")
	}
	wn := 0
	for _, wl := range sc.Workloads {
		wn = max(wn, len(wl.Name))
	}
	for i, wl := range sc.Workloads {
		label := pad
		if i == 0 {
			label = t.label("Workloads")
		}
		t.prose(label+fmt.Sprintf("%-*s  ", wn, wl.Name), pad+strings.Repeat(" ", wn+2), wl.Describe(), "")
	}
	if len(sc.NoTrack) > 0 {
		t.fields(t.label("NOTRACK"), pad, " · ", notrackParts(sc.NoTrack)...)
	}
	t.fields(t.label("Settings"), pad, " · ", changedSettings(r.Settings)...)
	t.blank()
	if _, err := io.WriteString(w, t.b.String()); err != nil {
		return err
	}
	c := timelineChart(r, sc)
	c.Title = paint(color, bold, "Entries over time") + fmt.Sprintf(", sampled every %s", r.Step)
	// Sparklines of states that never hold 1% of the peak are noise.
	keep := c.Series[:1]
	for _, s := range c.Series[1:] {
		if slices.Max(s.Values) >= 0.01*float64(max(r.Peak, 1)) {
			keep = append(keep, s)
		}
	}
	c.Series = keep
	return render.TerminalChart(w, c, width, 10)
}

func notrackParts(rules []engine.NoTrackRule) []string {
	var parts []string
	for _, r := range rules {
		s := "prerouting"
		if r.Hook == engine.Output {
			s = "output"
		}
		if r.Iface != "" {
			s += " iface " + r.Iface
		}
		if r.Proto != 0 {
			s += " " + r.Proto.String()
		}
		if r.Src.IsValid() {
			s += " src " + r.Src.String()
		}
		if r.Dst.IsValid() {
			s += " dst " + r.Dst.String()
		}
		if r.SPort != (engine.PortRange{}) {
			s += fmt.Sprintf(" sport %d-%d", r.SPort.Lo, max(r.SPort.Hi, r.SPort.Lo))
		}
		if r.DPort != (engine.PortRange{}) {
			s += fmt.Sprintf(" dport %d-%d", r.DPort.Lo, max(r.DPort.Hi, r.DPort.Lo))
		}
		parts = append(parts, s)
	}
	return parts
}

var stateColors = map[conntrack.TCPState]string{
	conntrack.TCPSynSent: "#d97706", conntrack.TCPSynRecv: "#f59e0b", conntrack.TCPEstablished: "#2563eb",
	conntrack.TCPFinWait: "#7c3aed", conntrack.TCPCloseWait: "#a855f7", conntrack.TCPLastAck: "#c084fc",
	conntrack.TCPTimeWait: "#16a34a", conntrack.TCPClose: "#65a30d", conntrack.TCPSynSent2: "#b45309",
}

// timelineChart turns a result into a chart: the total, each TCP state and
// protocol that ever held entries, the max as the limit, drops as marks.
func timelineChart(r *sim.Result, sc *sim.Scenario) render.Chart {
	n := len(r.Timeline)
	c := render.Chart{Title: fmt.Sprintf("ctdoctor simulate %s: conntrack entries", sc.Name), Times: make([]float64, n),
		Limit: float64(r.Max), LimitLabel: "nf_conntrack_max " + sim.Thousands(int64(r.Max)),
		Marks: make([]bool, n), MarkLabel: "drops", TimeLabel: func(s float64) string { return sim.Clock(time.Duration(s * 1e9)) }}
	total := render.Series{Name: "total", Values: make([]float64, n), Color: "#111827"}
	perState := map[conntrack.TCPState][]float64{}
	var udp, icmp, other []float64
	for i, s := range r.Timeline {
		c.Times[i] = s.Time.Seconds()
		total.Values[i] = float64(s.Total)
		c.Marks[i] = s.Drop > 0 || s.InsertFailed > 0
	}
	for _, st := range sim.StateNames {
		v := make([]float64, n)
		seen := false
		for i, s := range r.Timeline {
			v[i] = float64(s.TCP[st])
			seen = seen || s.TCP[st] > 0
		}
		if seen {
			perState[st] = v
		}
	}
	collect := func(get func(sim.Sample) int) []float64 {
		v := make([]float64, n)
		seen := false
		for i, s := range r.Timeline {
			v[i] = float64(get(s))
			seen = seen || v[i] > 0
		}
		if !seen {
			return nil
		}
		return v
	}
	udp = collect(func(s sim.Sample) int { return s.UDP })
	icmp = collect(func(s sim.Sample) int { return s.ICMP })
	other = collect(func(s sim.Sample) int { return s.Other })
	c.Series = append(c.Series, total)
	// Biggest at the end first.
	type named struct {
		name  string
		v     []float64
		color string
	}
	var rest []named
	for st, v := range perState {
		rest = append(rest, named{st.String(), v, stateColors[st]})
	}
	for _, x := range []named{{"udp", udp, "#0891b2"}, {"icmp", icmp, "#db2777"}, {"other", other, "#9ca3af"}} {
		if x.v != nil {
			rest = append(rest, x)
		}
	}
	peak := func(v []float64) float64 { return slices.Max(v) }
	slices.SortFunc(rest, func(a, b named) int {
		if c := cmp.Compare(peak(b.v), peak(a.v)); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	for _, x := range rest {
		c.Series = append(c.Series, render.Series{Name: x.name, Values: x.v, Color: x.color})
	}
	return c
}

func svgSubtitle(r *sim.Result) string {
	return fmt.Sprintf("%s · seed %d · %s", r.Scenario, r.Seed, r.Verdict())
}

// compareChart puts both runs' totals on one chart.
func compareChart(cmp *sim.Comparison) render.Chart {
	a, b := cmp.Current, cmp.Proposed
	n := min(len(a.Timeline), len(b.Timeline))
	c := render.Chart{Title: fmt.Sprintf("ctdoctor simulate %s: current vs proposed", a.Scenario), Times: make([]float64, n),
		Limit: float64(a.Max), LimitLabel: "nf_conntrack_max " + sim.Thousands(int64(a.Max)),
		Marks: make([]bool, n), MarkLabel: "drops (current)", TimeLabel: func(s float64) string { return sim.Clock(time.Duration(s * 1e9)) }}
	cur := render.Series{Name: "current", Values: make([]float64, n), Color: "#dc2626"}
	prop := render.Series{Name: "proposed", Values: make([]float64, n), Color: "#16a34a"}
	for i := range n {
		c.Times[i] = a.Timeline[i].Time.Seconds()
		cur.Values[i] = float64(a.Timeline[i].Total)
		prop.Values[i] = float64(b.Timeline[i].Total)
		c.Marks[i] = a.Timeline[i].Drop > 0 || a.Timeline[i].InsertFailed > 0
	}
	if b.Max != a.Max {
		c.LimitLabel = fmt.Sprintf("current max %s (proposed %s)", sim.Thousands(int64(a.Max)), sim.Thousands(int64(b.Max)))
	}
	c.Series = []render.Series{cur, prop}
	return c
}

func writeCompareText(w io.Writer, cmp *sim.Comparison, sc *sim.Scenario, wall time.Duration, color bool, width int) error {
	a, p := cmp.Current, cmp.Proposed
	d := cmp.Diff()
	t := newTextLines(color, width)
	t.fields("", "  ", " · ", paint(color, bold, "ctdoctor simulate"), a.Scenario,
		fmt.Sprintf("current vs proposed (%s)", cmp.ProposedText()), fmt.Sprintf("same seed %d", a.Seed),
		fmt.Sprintf("2 × %s in %.1f s", a.Duration, wall.Seconds()))
	if a.Description != "" {
		t.prose("", "", a.Description, dim)
	}
	label := paint(color, yellow, " SAME   ")
	switch {
	case a.Dropped() && !p.Dropped(), a.Dropped() && p.Dropped() && p.DroppedPackets < a.DroppedPackets,
		!a.Dropped() && !p.Dropped() && p.Peak < a.Peak:
		label = paint(color, green, " BETTER ")
	case !a.Dropped() && p.Dropped(), p.DroppedPackets > a.DroppedPackets, !a.Dropped() && !p.Dropped() && p.Peak > a.Peak:
		label = paint(color, red, " WORSE  ")
	}
	t.blank()
	t.verdictLine(label, d.Verdict)
	t.blank()
	// Each run's own verdict, word for word as a single run prints it.
	pad := strings.Repeat(" ", labelW)
	t.prose(t.label("current"), pad, a.Verdict(), "")
	t.prose(t.label("proposed"), pad, p.Verdict(), "")
	t.blank()

	th := func(n int64) string { return sim.Thousands(n) }
	pct := func(n, m int) string {
		if m <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(n)*100/float64(m))
	}
	withPct := true
	delta := func(x, y int64) string {
		switch {
		case y == x:
			return ""
		case x == 0 || !withPct:
			return signed(y - x)
		}
		return fmt.Sprintf("%s (%+.0f%%)", signed(y-x), float64(y-x)*100/float64(x))
	}
	drop := func(r *sim.Result) string {
		if r.FirstDrop < 0 {
			return "never"
		}
		return sim.Clock(r.FirstDrop)
	}
	type line struct {
		k, cur, prop string
		x, y         int64 // the numbers the change is between
		num          bool
	}
	lines := []line{
		{k: "max", cur: th(int64(a.Max)), prop: th(int64(p.Max)), x: int64(a.Max), y: int64(p.Max), num: true},
		{k: "peak", cur: th(int64(a.Peak)) + pct(a.Peak, a.Max), prop: th(int64(p.Peak)) + pct(p.Peak, p.Max), x: int64(a.Peak), y: int64(p.Peak), num: true},
		{k: "steady", cur: th(int64(a.Steady.Total)), prop: th(int64(p.Steady.Total)), x: int64(a.Steady.Total), y: int64(p.Steady.Total), num: true},
	}
	seen := map[string]bool{}
	for _, rows := range [][]countRow{stateRows(a.Steady), stateRows(p.Steady)} {
		for _, r := range rows {
			if seen[r.name] || len(seen) >= 5 {
				continue
			}
			seen[r.name] = true
			x, y := int64(rowCount(a.Steady, r.name)), int64(rowCount(p.Steady, r.name))
			lines = append(lines, line{k: "  " + r.name, cur: th(x), prop: th(y), x: x, y: y, num: true})
		}
	}
	counter := func(k string, x, y uint64) line {
		return line{k: k, cur: th(int64(x)), prop: th(int64(y)), x: int64(x), y: int64(y), num: true}
	}
	lines = append(lines,
		line{k: "first drop", cur: drop(a), prop: drop(p)},
		counter("drop", a.Drop, p.Drop),
		counter("early_drop", a.EarlyDrop, p.EarlyDrop),
		counter("insert_failed", a.InsertFailed, p.InsertFailed),
		counter("failed connections", a.Failed, p.Failed),
	)
	kw, cw, pw := 0, len("current"), len("proposed")
	for _, l := range lines {
		kw = max(kw, len(l.k))
		cw = max(cw, render.VisibleWidth(l.cur))
		pw = max(pw, render.VisibleWidth(l.prop))
	}
	// Three blanks between columns and the key column as wide as the
	// sparklines' labels below; narrower when the table does not fit.
	gap, kcol := 3, 20
	tableWidth := func() int {
		dw := 0
		for _, l := range lines {
			if l.num {
				dw = max(dw, render.VisibleWidth(delta(l.x, l.y)))
			}
		}
		return kcol + 1 + cw + gap + pw + gap + dw
	}
	if tableWidth() > width {
		gap, kcol = 2, kw
	}
	if tableWidth() > width {
		withPct = false
	}
	sp := strings.Repeat(" ", gap)
	t.line(fmt.Sprintf("%-*s %s%s%s%s%s", kcol, "", render.Pad(paint(color, bold, "current"), cw), sp,
		render.Pad(paint(color, bold, "proposed"), pw), sp, paint(color, bold, "change")))
	for _, l := range lines {
		diff := ""
		if l.num {
			diff = delta(l.x, l.y)
		}
		t.line(fmt.Sprintf("%-*s %s%s%s%s%s", kcol, l.k, render.Pad(l.cur, cw), sp, render.Pad(l.prop, pw), sp, diff))
	}
	t.blank()
	top := float64(max(a.Max, p.Max, a.Peak, p.Peak))
	sw := max(10, width-20-1-1-10)
	series := func(r *sim.Result) []float64 {
		v := make([]float64, len(r.Timeline))
		for i, s := range r.Timeline {
			v[i] = float64(s.Total)
		}
		return v
	}
	t.prose(paint(color, bold, "Entries over time")+" ", "", fmt.Sprintf("(same scale: %s entries = █; drops ▲)", th(int64(top))), "")
	for _, x := range []struct {
		name string
		r    *sim.Result
	}{{"current", a}, {"proposed", p}} {
		t.line(fmt.Sprintf("%-20s %s %10s", x.name, render.Sparkline(series(x.r), sw, top), th(int64(x.r.Final.Total))))
		if x.r.Dropped() {
			marks := make([]float64, len(x.r.Timeline))
			for i, s := range x.r.Timeline {
				if s.Drop > 0 || s.InsertFailed > 0 {
					marks[i] = 1
				}
			}
			t.line(fmt.Sprintf("%-20s %s", "", strings.Map(func(r rune) rune {
				if r == ' ' {
					return ' '
				}
				return '▲'
			}, render.Sparkline(marks, sw, 1))))
		}
	}
	last := a.Timeline[len(a.Timeline)-1].Time
	t.line(fmt.Sprintf("%-20s %-*s%s", "", sw-8, sim.Clock(0), sim.Clock(last)))
	_, err := io.WriteString(w, t.b.String())
	return err
}

func signed(n int64) string {
	if n < 0 {
		return "-" + sim.Thousands(-n)
	}
	return "+" + sim.Thousands(n)
}

func rowCount(s sim.Sample, name string) int {
	switch name {
	case "udp":
		return s.UDP
	case "icmp":
		return s.ICMP
	case "other":
		return s.Other
	}
	if st, ok := conntrack.TCPStateByName(name); ok {
		return s.TCP[st]
	}
	return 0
}
