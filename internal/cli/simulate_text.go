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
	if !on || s == "" {
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
func changedSettings(set map[string]int64) string {
	def := engine.DefaultSettings()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if def[k] != set[k] {
			parts = append(parts, fmt.Sprintf("%s=%d", k, set[k]))
		}
	}
	if len(parts) == 0 {
		return "kernel defaults (nf_conntrack_max=262144)"
	}
	return strings.Join(parts, " · ")
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
	var b strings.Builder
	th := func(n int) string { return sim.Thousands(int64(n)) }
	fmt.Fprintf(&b, "%s · %s · %s of virtual time in %.1f s%s · seed %d\n", paint(color, bold, "ctdoctor simulate"),
		r.Scenario, r.Duration, wall.Seconds(), speedup(r.Duration, wall), r.Seed)
	if r.Description != "" {
		for _, l := range wrapText(r.Description, width-2) {
			fmt.Fprintf(&b, "%s\n", paint(color, dim, l))
		}
	}
	fmt.Fprintf(&b, "\n%s %s\n\n", verdictLabel(r, color), paint(color, bold, r.Verdict()))

	usage := func(n int) string {
		if r.Max <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(n)*100/float64(r.Max))
	}
	fmt.Fprintf(&b, "%-10s max %s · buckets %s · peak %s%s at %s\n", paint(color, bold, "Table"), th(r.Max),
		th(int(r.Settings[engine.SetBuckets])), th(r.Peak), usage(r.Peak), sim.Clock(r.PeakAt))
	fmt.Fprintf(&b, "%-10s %s entries%s, the mean over the last %s\n", paint(color, bold, "Steady"), th(r.Steady.Total),
		usage(r.Steady.Total), (r.Duration / 10).Round(time.Second))
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
		fmt.Fprintf(&b, "%-10s   %-*s %9s %4s %s\n", "", nw, row.name, th(row.n), share, barText(frac, 20))
	}
	fmt.Fprintf(&b, "%-10s   assured %s · unreplied %s\n", "", th(r.Steady.Assured), th(r.Steady.Unreplied))
	ctr := func(name string, v uint64) string {
		s := fmt.Sprintf("%s %s", name, sim.Thousands(int64(v)))
		if v > 0 && name != "early_drop" {
			return paint(color, red, s)
		}
		return s
	}
	fmt.Fprintf(&b, "%-10s %s · %s · %s · %s\n", paint(color, bold, "Counters"), ctr("drop", r.Drop), ctr("early_drop", r.EarlyDrop),
		ctr("insert_failed", r.InsertFailed), ctr("chaintoolong", r.ChainTooLong))
	if r.FirstDrop >= 0 {
		fmt.Fprintf(&b, "%-10s first drop at %s%s\n", "", sim.Clock(r.FirstDrop), dropCause(r))
	}
	traffic := fmt.Sprintf("%s connections · %s packets · %s retransmitted", sim.Thousands(int64(r.Connections)),
		sim.Thousands(int64(r.Packets)), sim.Thousands(int64(r.Retransmits)))
	fmt.Fprintf(&b, "%-10s %s\n", paint(color, bold, "Traffic"), traffic)
	if r.Failed > 0 {
		fmt.Fprintf(&b, "%-10s %s\n", "", paint(color, red, sim.Thousands(int64(r.Failed))+" connections failed: conntrack dropped their packets until they gave up"))
	}
	if r.Lost > 0 {
		fmt.Fprintf(&b, "%-10s %s connections lost silently to the middlebox (no FIN, no RST)\n", "", sim.Thousands(int64(r.Lost)))
	}
	wn := 0
	for _, wl := range sc.Workloads {
		wn = max(wn, len(wl.Name))
	}
	for i, wl := range sc.Workloads {
		label := ""
		if i == 0 {
			label = paint(color, bold, "Workloads")
		}
		fmt.Fprintf(&b, "%-10s %-*s  %s\n", label, wn, wl.Name, wl.Describe())
	}
	if len(sc.NoTrack) > 0 {
		fmt.Fprintf(&b, "%-10s %s\n", paint(color, bold, "NOTRACK"), notrackText(sc.NoTrack))
	}
	fmt.Fprintf(&b, "%-10s %s\n\n", paint(color, bold, "Settings"), changedSettings(r.Settings))
	if _, err := io.WriteString(w, b.String()); err != nil {
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

func notrackText(rules []engine.NoTrackRule) string {
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
	return strings.Join(parts, " · ")
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
	var b strings.Builder
	fmt.Fprintf(&b, "%s · %s · current vs proposed (%s) · same seed %d · 2 × %s in %.1f s\n", paint(color, bold, "ctdoctor simulate"),
		a.Scenario, cmp.ProposedText(), a.Seed, a.Duration, wall.Seconds())
	if a.Description != "" {
		for _, l := range wrapText(a.Description, width-2) {
			fmt.Fprintf(&b, "%s\n", paint(color, dim, l))
		}
	}
	label := paint(color, yellow, " SAME   ")
	switch {
	case a.Dropped() && !p.Dropped(), a.Dropped() && p.Dropped() && p.DroppedPackets < a.DroppedPackets,
		!a.Dropped() && !p.Dropped() && p.Peak < a.Peak:
		label = paint(color, green, " BETTER ")
	case !a.Dropped() && p.Dropped(), p.DroppedPackets > a.DroppedPackets, !a.Dropped() && !p.Dropped() && p.Peak > a.Peak:
		label = paint(color, red, " WORSE  ")
	}
	fmt.Fprintf(&b, "\n%s %s\n\n", label, paint(color, bold, d.Verdict))

	th := func(n int64) string { return sim.Thousands(n) }
	pct := func(n, m int) string {
		if m <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(n)*100/float64(m))
	}
	delta := func(x, y int64) string {
		switch {
		case y == x:
			return ""
		case x == 0:
			return fmt.Sprintf("%+d", y-x)
		}
		return fmt.Sprintf("%s (%+.0f%%)", signed(y-x), float64(y-x)*100/float64(x))
	}
	drop := func(r *sim.Result) string {
		if r.FirstDrop < 0 {
			return "never"
		}
		return sim.Clock(r.FirstDrop)
	}
	type line struct{ k, cur, prop, diff string }
	lines := []line{
		{"verdict", shortVerdict(a), shortVerdict(p), ""},
		{"max", th(int64(a.Max)), th(int64(p.Max)), delta(int64(a.Max), int64(p.Max))},
		{"peak", th(int64(a.Peak)) + pct(a.Peak, a.Max), th(int64(p.Peak)) + pct(p.Peak, p.Max), delta(int64(a.Peak), int64(p.Peak))},
		{"steady", th(int64(a.Steady.Total)), th(int64(p.Steady.Total)), delta(int64(a.Steady.Total), int64(p.Steady.Total))},
	}
	seen := map[string]bool{}
	for _, rows := range [][]countRow{stateRows(a.Steady), stateRows(p.Steady)} {
		for _, r := range rows {
			if seen[r.name] || len(seen) >= 5 {
				continue
			}
			seen[r.name] = true
			x, y := rowCount(a.Steady, r.name), rowCount(p.Steady, r.name)
			lines = append(lines, line{"  " + r.name, th(int64(x)), th(int64(y)), delta(int64(x), int64(y))})
		}
	}
	lines = append(lines,
		line{"first drop", drop(a), drop(p), ""},
		line{"drop", th(int64(a.Drop)), th(int64(p.Drop)), delta(int64(a.Drop), int64(p.Drop))},
		line{"early_drop", th(int64(a.EarlyDrop)), th(int64(p.EarlyDrop)), delta(int64(a.EarlyDrop), int64(p.EarlyDrop))},
		line{"insert_failed", th(int64(a.InsertFailed)), th(int64(p.InsertFailed)), delta(int64(a.InsertFailed), int64(p.InsertFailed))},
		line{"failed connections", th(int64(a.Failed)), th(int64(p.Failed)), delta(int64(a.Failed), int64(p.Failed))},
	)
	cw := len("current")
	pw := len("proposed")
	for _, l := range lines {
		cw = max(cw, len([]rune(l.cur)))
		pw = max(pw, len([]rune(l.prop)))
	}
	fmt.Fprintf(&b, "%-20s %s%s   %s%s   %s\n", "", paint(color, bold, "current"), strings.Repeat(" ", cw-len("current")),
		paint(color, bold, "proposed"), strings.Repeat(" ", pw-len("proposed")), paint(color, bold, "change"))
	for _, l := range lines {
		fmt.Fprintf(&b, "%-20s %s%s   %s%s   %s\n", l.k, l.cur, strings.Repeat(" ", cw-len([]rune(l.cur))),
			l.prop, strings.Repeat(" ", pw-len([]rune(l.prop))), l.diff)
	}
	b.WriteString("\n")
	top := float64(max(a.Max, p.Max, a.Peak, p.Peak))
	sw := max(20, width-22-12)
	series := func(r *sim.Result) []float64 {
		v := make([]float64, len(r.Timeline))
		for i, s := range r.Timeline {
			v[i] = float64(s.Total)
		}
		return v
	}
	fmt.Fprintf(&b, "%s (same scale: %s entries = █; drops ▲)\n", paint(color, bold, "Entries over time"), th(int64(top)))
	for _, x := range []struct {
		name string
		r    *sim.Result
	}{{"current", a}, {"proposed", p}} {
		fmt.Fprintf(&b, "%-20s %s %10s\n", x.name, render.Sparkline(series(x.r), sw, top), th(int64(x.r.Final.Total)))
		if x.r.Dropped() {
			marks := make([]float64, len(x.r.Timeline))
			for i, s := range x.r.Timeline {
				if s.Drop > 0 || s.InsertFailed > 0 {
					marks[i] = 1
				}
			}
			fmt.Fprintf(&b, "%-20s %s\n", "", strings.Map(func(r rune) rune {
				if r == ' ' {
					return ' '
				}
				return '▲'
			}, render.Sparkline(marks, sw, 1)))
		}
	}
	last := a.Timeline[len(a.Timeline)-1].Time
	fmt.Fprintf(&b, "%-20s %-*s%s\n", "", sw-8, sim.Clock(0), sim.Clock(last))
	_, err := io.WriteString(w, b.String())
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

// shortVerdict is the comparison table's verdict cell; its time is the
// one the run's verdict line gives.
func shortVerdict(r *sim.Result) string {
	switch r.Cause() {
	case sim.CauseTableFull:
		return "full at " + sim.Clock(r.FullAt)
	case sim.CauseChainTooLong:
		return "chains too long at " + sim.Clock(r.FirstChainDrop)
	case sim.CauseFullNoDrops:
		return "full at " + sim.Clock(r.FullAt) + ", no drops"
	}
	return "never fills"
}
