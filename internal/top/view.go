package top

import (
	"fmt"
	"strings"
	"time"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/watch"
)

// MinWidth and MinHeight are the smallest terminal the screen draws in;
// a smaller one gets a message saying so.
const (
	MinWidth  = 60
	MinHeight = 16
)

// RenderOptions say how to draw one frame.
type RenderOptions struct {
	// Width is the number of columns every line fits in.
	Width int
	// Height is the number of lines; 0 draws every row and finding, with
	// long lines wrapped rather than cut (the --once output).
	Height int
	Colors Colors
	// Position says which of the watched namespaces this is ("2/3"); ""
	// for the only one.
	Position string
	Sort     SortMode
	Filter   string
	// Usage and Drops are the session's history of the table's usage (0
	// to 1) and drops per second, oldest first, for the sparklines.
	Usage, Drops []float64
	// NewSince marks kernel-log events logged after it as new.
	NewSince time.Time
	// Footer is the last line of the screen (keys, a message); none when "".
	Footer string
	// Now is the time shown in the title when the frame has none.
	Now time.Time
}

// Render draws one frame as text: every line fits o.Width columns and,
// when o.Height is set, there are at most o.Height lines.
func Render(f watch.Frame, o RenderOptions) string {
	p := newPainter(&f, o)
	return strings.Join(p.main(), "\n")
}

// painter draws the screens of one frame.
type painter struct {
	f    *watch.Frame
	o    RenderOptions
	st   styles
	w    int
	once bool // no height: show everything, wrap rather than cut
}

func newPainter(f *watch.Frame, o RenderOptions) *painter {
	return &painter{f: f, o: o, st: newStyles(o.Colors), w: max(o.Width, 20), once: o.Height <= 0}
}

// line fits s (styled) to the width: a line wider than the screen is cut.
func (p *painter) line(s string) string {
	if lipgloss.Width(s) <= p.w {
		return s
	}
	return cutStyled(s, p.w)
}

// text lays out prose after a styled prefix: one line cut to the width
// on the screen; in --once output, wrapped lines, the ones after the
// first indented by indent columns.
func (p *painter) text(prefix string, indent int, s string, style lipgloss.Style) []string {
	pw := lipgloss.Width(prefix)
	if !p.once {
		return []string{p.line(prefix + style.Render(fit(s, max(1, p.w-pw), false)))}
	}
	first, rest := strings.Repeat(" ", pw), strings.Repeat(" ", indent)
	lines := wrapWords(s, p.w, first, rest)
	out := make([]string, len(lines))
	for i, l := range lines {
		if i == 0 {
			out[i] = prefix + style.Render(strings.TrimPrefix(l, first))
		} else {
			out[i] = rest + style.Render(strings.TrimPrefix(l, rest))
		}
	}
	return out
}

// title is the top line: the namespace, the mode, the time.
func (p *painter) title(right string) string {
	f := p.f
	ns := "netns " + f.NetNS
	if f.NetNS == "" {
		ns = "netns ?"
	}
	if p.o.Position != "" {
		ns += " (" + p.o.Position + ")"
	}
	mode := string(f.Mode)
	if mode == "" {
		mode = "starting"
	}
	at := f.Time
	if at.IsZero() {
		at = p.o.Now
	}
	parts := []string{"ctdoctor top", ns, mode}
	if f.Gone {
		parts = append(parts, "GONE")
	}
	if !at.IsZero() {
		parts = append(parts, at.Local().Format("15:04:05"))
	}
	left := " " + strings.Join(parts, " · ")
	if p.once {
		return p.st.bold.Render(strings.TrimSpace(left))
	}
	room := p.w - len([]rune(right)) - 1
	if room < 30 {
		right, room = "", p.w
	}
	left = fit(left, room, false)
	gap := p.w - lipgloss.Width(left) - lipgloss.Width(right)
	return p.st.title.Render(left + strings.Repeat(" ", max(0, gap)) + right)
}

// header is the lines above the tables: title, verdict, gauge, rates,
// sparklines, and the mode's reason and the gone banner when they apply.
func (p *painter) header(right string) []string {
	f, st := p.f, p.st
	out := []string{p.title(right)}
	if f.Gone {
		out = append(out, p.text(st.crit.Render(" GONE ")+" ", 7, "the namespace "+f.NetNS+" was deleted while watched: its last values are shown", st.bold)...)
	}
	switch {
	case f.Report == nil && f.ReportError != "":
		out = append(out, p.text(st.warn.Render(" ?       ")+" ", 10, "the diagnosis failed: "+f.ReportError, lipgloss.NewStyle())...)
	case f.Report == nil:
		out = append(out, p.text(st.dim.Render(" …       ")+" ", 10, "diagnosing… (the first full listing has not finished)", st.dim)...)
	default:
		v := f.Report.Verdict
		label := st.sev(v.Level).Render(" " + fmt.Sprintf("%-8s", strings.ToUpper(v.Level)))
		out = append(out, p.text(label+" ", 10, v.Reason, lipgloss.NewStyle())...)
	}
	out = append(out, p.gauge(), p.rates())
	if !p.once {
		out = append(out, p.sparks()) // one frame has no history
	}
	if f.Mode == watch.ModePolling || f.ModeReason != "" {
		reason := f.ModeReason
		if reason == "" {
			reason = "every refresh lists the whole table"
		}
		out = append(out, p.text(st.bold.Render("Mode   ")+string(f.Mode)+": ", 7, reason, lipgloss.NewStyle())...)
	}
	return out
}

// gauge is the usage line: a bar, the count against the limit, the time
// until full.
func (p *painter) gauge() string {
	f, st := p.f, p.st
	label := st.bold.Render("Table  ")
	ttf := timeToFull(f.TimeToFull, f.Max)
	ttfStyle := lipgloss.NewStyle()
	switch {
	case f.Max > 0 && f.TimeToFull == 0:
		ttfStyle = st.crit
	case f.Max > 0 && f.TimeToFull > 0 && f.TimeToFull < time.Hour:
		ttfStyle = st.warn
	}
	if f.Max <= 0 {
		return p.line(label + num(f.Count) + " entries · " + ttfStyle.Render(ttf))
	}
	rest := fmt.Sprintf(" %s  %s / %s · ", pct(f.Usage), num(f.Count), num(f.Max))
	gw := min(40, p.w-7-2-len([]rune(rest))-len([]rune(ttf)))
	if gw < 8 {
		return p.line(label + strings.TrimSpace(rest) + " " + ttfStyle.Render(ttf))
	}
	barStyle := st.good
	switch {
	case f.Usage >= 0.9:
		barStyle = st.full
	case f.Usage >= 0.75:
		barStyle = st.warn
	}
	return p.line(label + "[" + barStyle.Render(render.Bar(f.Usage, gw)) + "]" + rest + ttfStyle.Render(ttf))
}

// rates is the counters' line.
func (p *painter) rates() string {
	f, st := p.f, p.st
	val := func(r float64, bad bool) string {
		s := rate(r) + "/s"
		if bad && r > 0 {
			return st.crit.Render(s)
		}
		return s
	}
	label := st.bold.Render("Rates  ")
	for _, v := range []struct{ names [4]string }{
		{[4]string{"new ", " · drop ", " · early drop ", " · insert failed "}},
		{[4]string{"new ", "  drop ", "  early ", "  ins.failed "}},
		{[4]string{"new ", " drop ", " early ", " insfail "}},
	} {
		s := label + v.names[0] + val(f.NewPerSec, false) + v.names[1] + val(f.DropPerSec, true) +
			v.names[2] + val(f.EarlyDropPerSec, true) + v.names[3] + val(f.InsertFailedPerSec, true)
		if lipgloss.Width(s) <= p.w {
			return s
		}
	}
	return p.line(label + "new " + val(f.NewPerSec, false) + " drop " + val(f.DropPerSec, true))
}

// sparks is the session's usage and drops as sparklines.
func (p *painter) sparks() string {
	st := p.st
	half := (p.w - 2) / 2
	var peak float64
	for _, d := range p.o.Drops {
		peak = max(peak, d)
	}
	peakS := "peak " + rate(peak) + "/s"
	uw := half - 7
	dw := p.w - half - 2 - 7 - len(peakS) - 1
	if uw < 4 || dw < 4 {
		return p.line(st.bold.Render("Usage  ") + spark(p.o.Usage, max(4, p.w-7), 1))
	}
	u := st.bold.Render("Usage  ") + spark(p.o.Usage, uw, 1)
	d := st.bold.Render("Drops  ") + st.warn.Render(spark(p.o.Drops, dw, 0)) + " " + peakS
	return u + "  " + d
}

// main is the dashboard: header, tables, kernel log, findings, footer.
func (p *painter) main() []string {
	hdr := p.header("")
	var foot []string
	if p.o.Footer != "" && !p.once {
		foot = []string{p.line(p.o.Footer)}
	}
	ts := tables(p.f, p.o.Sort, p.o.Filter)
	grid := pack(ts, p.w)
	var errLines []string
	if p.f.Err != "" {
		errLines = p.errLines()
		grid = nil
	}
	logMax, findMax := 1+min(len(p.f.KernelLog), 10), 1+p.findingCount()
	if p.once {
		var out []string
		out = append(out, hdr...)
		out = append(out, "")
		out = append(out, errLines...)
		for _, r := range grid {
			out = append(out, r.lines(p.st, r.maxRows(), p.o.Filter)...)
			out = append(out, "")
		}
		if errLines != nil {
			out = append(out, "")
		}
		out = append(out, p.kernelLog(logMax)...)
		out = append(out, "")
		out = append(out, p.findings(findMax)...)
		return trimRight(out)
	}

	// Share out the lines: every section its least, then the tables up to
	// six rows, findings and the log up to three, then all they want;
	// what is left separates the sections.
	avail := p.o.Height - len(hdr) - len(foot)
	tableLines := make([]int, len(grid)) // data lines per grid row
	logN, findN := 1, 1
	need := len(errLines) + logN + findN
	for i := range grid {
		tableLines[i] = 2
		need += 1 + tableLines[i]
	}
	for i := range grid {
		if need > avail && tableLines[i] > 1 {
			tableLines[i]--
			need--
		}
	}
	left := avail - need
	grow := func(n *int, upTo int) {
		for left > 0 && *n < upTo {
			*n++
			left--
		}
	}
	growTables := func(upTo int) {
		for more := true; more && left > 0; {
			more = false
			for i, r := range grid {
				if left > 0 && tableLines[i] < min(upTo, r.maxRows()) {
					tableLines[i]++
					left--
					more = true
				}
			}
		}
	}
	growTables(4)
	grow(&findN, min(findMax, 3))
	grow(&logN, min(logMax, 2))
	growTables(6)
	grow(&findN, min(findMax, 4))
	grow(&logN, min(logMax, 4))
	growTables(1 << 20)
	grow(&findN, findMax)
	grow(&logN, logMax)

	out := append([]string{}, hdr...)
	gap := func() {
		if left > 0 {
			out = append(out, "")
			left--
		}
	}
	gap()
	out = append(out, errLines...)
	for i, r := range grid {
		out = append(out, r.lines(p.st, tableLines[i], p.o.Filter)...)
		gap()
	}
	out = append(out, p.kernelLog(logN)...)
	gap()
	out = append(out, p.findings(findN)...)
	for left > 0 {
		out = append(out, "")
		left--
	}
	out = append(out, foot...)
	for i, l := range out {
		out[i] = p.line(l)
	}
	if len(out) > p.o.Height {
		out = out[:p.o.Height]
	}
	return out
}

// errLines say why the namespace cannot be read, in place of the tables.
func (p *painter) errLines() []string {
	st := p.st
	lines := wrapWords(p.f.Err, p.w-9, "", "")
	out := []string{st.crit.Render(" ERROR ") + "  " + st.bold.Render(fit("cannot read the table of netns "+p.f.NetNS+":", p.w-9, false))}
	for _, l := range lines {
		out = append(out, "         "+l)
	}
	if !p.once && len(out) > 4 {
		out = out[:4]
	}
	return out
}

// kernelLog is the table-full events, newest first, in n lines.
func (p *painter) kernelLog(n int) []string {
	f, st := p.f, p.st
	head := st.bold.Render("Kernel log")
	if len(f.KernelLog) == 0 && f.KernelLogError != "" {
		return p.text(head+"  ", 12, "not followed: "+f.KernelLogError, st.dim)
	}
	if len(f.KernelLog) == 0 {
		return []string{p.line(head + "  " + st.dim.Render("no \"table full, dropping packet\" event since the watch started"))}
	}
	total := 0
	for _, e := range f.KernelLog {
		total += max(e.Count, 1)
	}
	out := []string{p.line(head + "  " + st.crit.Render(fmt.Sprintf("%d table-full lines", total)) +
		fmt.Sprintf(" (%d records) since the watch started", len(f.KernelLog)))}
	for i := len(f.KernelLog) - 1; i >= 0 && len(out) < n; i-- {
		e := f.KernelLog[i]
		at := e.Time.Local().Format("15:04:05")
		cnt := fmt.Sprintf("×%-4d", max(e.Count, 1))
		pre := "  " + at + " " + cnt + " "
		if !p.o.NewSince.IsZero() && e.Time.After(p.o.NewSince) {
			pre = "  " + st.crit.Render(at) + " " + cnt + " "
		}
		out = append(out, p.text(pre, 17, strings.TrimSpace(e.Message), lipgloss.NewStyle())...)
	}
	if len(out) > n && !p.once {
		out = out[:n]
	}
	return out
}

func (p *painter) findingCount() int {
	if p.f.Report == nil {
		return 0
	}
	return len(p.f.Report.Findings)
}

// findings lists the findings, one a line, in n lines.
func (p *painter) findings(n int) []string {
	st := p.st
	r := p.f.Report
	head := st.bold.Render("Findings")
	switch {
	case r == nil:
		return []string{p.line(head + "  " + st.dim.Render("waiting for the first diagnosis…"))}
	case len(r.Findings) == 0:
		return []string{p.line(head + "  " + st.good.Render("none"))}
	}
	hint := ""
	if !p.once {
		hint = st.dim.Render("  f: browse them and their fixes")
	}
	if p.f.ReportError != "" {
		hint = st.warn.Render("  the last diagnosis failed: " + p.f.ReportError)
	}
	out := []string{p.line(head + fmt.Sprintf(" (%d)", len(r.Findings)) + hint)}
	for _, fd := range r.Findings {
		if len(out) >= n && !p.once {
			break
		}
		if len(out) == n-1 && len(r.Findings) > n-1 && !p.once {
			out = append(out, st.dim.Render(fmt.Sprintf("  +%d more: press f", len(r.Findings)-(n-2))))
			break
		}
		out = append(out, p.text(findingLabel(st, fd)+" "+st.bold.Render(fd.ID)+"  ", 11, fd.Summary, lipgloss.NewStyle())...)
	}
	return out
}

// findingLabel is "● WARNING " in the finding's colour.
func findingLabel(st styles, f analyze.Finding) string {
	return st.sev(f.Severity).Render(fmt.Sprintf("● %-8s", strings.ToUpper(f.Severity)))
}

// trimRight drops the trailing blanks of each line and the blank lines at
// the end.
func trimRight(lines []string) []string {
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// cutStyled shortens a styled line to n columns, keeping its escape
// sequences well formed.
func cutStyled(s string, n int) string {
	return ansi.Truncate(s, n, "…")
}
