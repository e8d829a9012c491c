package render

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// TextOptions control the terminal report.
type TextOptions struct {
	Color bool // ANSI colours (off when NO_COLOR is set or stdout is not a terminal)
	Width int  // terminal width; 0 = 100
	// Verbose prints every finding's explanation; otherwise only warning and
	// critical findings carry it.
	Verbose bool
}

type painter struct{ on bool }

func (p painter) c(code, s string) string {
	if !p.on || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}
func (p painter) bold(s string) string { return p.c("1", s) }
func (p painter) dim(s string) string  { return p.c("2", s) }
func (p painter) sev(level, s string) string {
	switch level {
	case analyze.Critical:
		return p.c("1;31", s)
	case analyze.Warning:
		return p.c("1;33", s)
	case analyze.Healthy:
		return p.c("1;32", s)
	}
	return p.c("36", s)
}

// JSON writes the report as indented JSON.
func JSON(w io.Writer, r *analyze.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// Text writes the human report. Every line fits o.Width visible columns
// (ANSI colours take none), except a fix command with a word that alone
// is wider: commands are only ever broken where the shell sees a blank,
// with a trailing backslash, so that they paste and run as printed.
func Text(w io.Writer, r *analyze.Report, o TextOptions) error {
	if o.Width <= 0 {
		o.Width = DefaultWidth
	}
	t := &textWriter{p: painter{o.Color}, width: max(o.Width, MinWidth)}
	t.header(r)
	t.verdict(r)
	t.table(r)
	t.breakdown(r)
	t.namespaces(r)
	t.findings(r, o.Verbose)
	t.warnings(r)
	_, err := io.WriteString(w, t.b.String())
	return err
}

// labelW is the width of the label column ("Kernel log " and the values after it).
const labelW = 11

// textWriter lays the report out in lines of at most width visible columns.
type textWriter struct {
	b     strings.Builder
	p     painter
	width int
}

func (t *textWriter) line(s string) {
	t.b.WriteString(strings.TrimRight(s, " "))
	t.b.WriteByte('\n')
}

func (t *textWriter) blank() { t.b.WriteByte('\n') }

// label is a bold label padded to the label column.
func (t *textWriter) label(name string) string { return Pad(t.p.bold(name), labelW-1) + " " }

func indent(n int) string { return strings.Repeat(" ", max(n, 0)) }

func plain(s string) string { return s }

// para writes prose wrapped at blanks: the first line after first, the
// others after cont, each line's text painted with paint.
func (t *textWriter) para(first, cont, text string, paint func(string) string) {
	fw, cw := VisibleWidth(first), VisibleWidth(cont)
	lines := lay(words(text, t.width-max(fw, cw)), " ", t.width-fw, t.width-cw)
	if len(lines) == 0 {
		t.line(first)
	}
	for i, l := range lines {
		prefix := cont
		if i == 0 {
			prefix = first
		}
		t.line(prefix + paint(l))
	}
}

// tokens writes already painted tokens joined by sep, wrapped between
// tokens; a plain token wider than a line is broken at its blanks.
func (t *textWriter) tokens(first, cont string, toks []string, sep string) {
	fw, cw := VisibleWidth(first), VisibleWidth(cont)
	room := t.width - max(fw, cw)
	var fitted []string
	for _, tok := range toks {
		if VisibleWidth(tok) > room { // (its colour is lost: only on very narrow terminals)
			fitted = append(fitted, lay(words(StripANSI(tok), room), " ", room, room)...)
			continue
		}
		fitted = append(fitted, tok)
	}
	lines := lay(fitted, sep, t.width-fw, t.width-cw)
	if len(lines) == 0 {
		t.line(first)
	}
	for i, l := range lines {
		prefix := cont
		if i == 0 {
			prefix = first
		}
		t.line(prefix + l)
	}
}

func (t *textWriter) header(r *analyze.Report) {
	p, h := t.p, r.Host
	name := p.bold("ctdoctor") + " "
	if h.Source == "file" {
		t.para(name, indent(9), fmt.Sprintf("entries from %s (a listing only: the host's table size, counters and kernel log are not known)", h.NetNS), plain)
		t.blank()
		return
	}
	ns := h.NetNS
	if h.NetNSInode != 0 {
		ns = fmt.Sprintf("%s [%d]", ns, h.NetNSInode)
	}
	t.tokens(name, indent(9), []string{orDash(h.Hostname), "kernel " + orDash(h.Kernel), "netns " + ns,
		fmt.Sprintf("%d CPUs", h.CPUs), human(int64(h.MemBytes)) + " RAM", "entries from " + orDash(h.Source)}, " · ")
	t.blank()
}

func (t *textWriter) verdict(r *analyze.Report) {
	label := t.p.sev(r.Verdict.Level, Pad(" "+strings.ToUpper(r.Verdict.Level), 9))
	t.para(label+"  ", indent(VisibleWidth(label)+2), r.Verdict.Reason, t.p.bold)
	t.blank()
}

func (t *textWriter) table(r *analyze.Report) {
	p, tb := t.p, r.Table
	gaugeLevel := analyze.Healthy
	switch {
	case tb.Usage >= 0.9:
		gaugeLevel = analyze.Critical
	case tb.Usage >= 0.75:
		gaugeLevel = analyze.Warning
	}
	pc := pctStr(tb.Usage)
	count := fmt.Sprintf("%s / %s entries", num(tb.Count), num(tb.Max))
	room := t.width - labelW
	gw := room - len("[] ") - len(pc) - 2 - VisibleWidth(count)
	if gw < 10 { // the counts go to the next line
		gw = room - len("[] ") - len(pc)
	}
	gw = min(max(gw, 10), 30)
	t.tokens(t.label("Table"), indent(labelW), []string{p.sev(gaugeLevel, gauge(tb.Usage, gw)) + " " + pc, count}, "  ")
	if tb.Buckets > 0 {
		t.para(indent(labelW), indent(labelW), fmt.Sprintf("%s buckets (%.2f entries/bucket) · memory %s now, %s when full (%s/entry)",
			num(tb.Buckets), tb.EntriesPerBucket, human(tb.MemoryBytes), human(tb.MemoryAtMaxBytes), human(perEntry(tb))), plain)
	}
	if tb.DefaultMax > 0 {
		t.para(indent(labelW), indent(labelW), fmt.Sprintf("kernel default for this RAM: %s buckets / %s max%s",
			num(tb.DefaultBuckets), num(tb.DefaultMax), ifs(tb.Legacy, " (legacy ip_conntrack)")), plain)
	}
	s := r.Stats
	if s.Available {
		t.tokens(t.label("Counters"), indent(labelW), []string{
			counter(p, "drop", s.Drop, s, true), counter(p, "early_drop", s.EarlyDrop, s, false),
			counter(p, "insert_failed", s.InsertFailed, s, true), counter(p, "clash_resolve", s.ClashResolve, s, false),
			counter(p, "chaintoolong", s.ChainTooLong, s, true), counter(p, "invalid", s.Invalid, s, false),
		}, " · ")
		t.para(indent(labelW), indent(labelW), fmt.Sprintf("from %s%s", s.Source, ifs(s.Interval > 0, fmt.Sprintf(", rates over %.1f s", s.Interval))), p.dim)
	} else {
		t.line(t.label("Counters") + p.dim("unavailable"))
	}
	l := r.Log
	switch {
	case l.TableFullEvents > 0:
		toks := []string{p.sev(analyze.Critical, num(int64(l.TableFullEvents)))}
		toks = append(toks, words(fmt.Sprintf("\"table full, dropping packet\" events (+%d suppressed), first %s, last %s",
			l.Suppressed, orDash(l.First), orDash(l.Last)), room)...)
		t.tokens(t.label("Kernel log"), indent(labelW), toks, " ")
		for _, n := range l.NetNS {
			// Names are shortened to 40 columns, not the "gone; number since reused by" before one.
			label := n.Label()
			label = TruncateMiddle(label, 40+len(label)-len(n.Name)-len(n.ReusedBy))
			t.para(indent(labelW+2), indent(labelW+4), fmt.Sprintf("netns %d%s: %d", n.Inode, ifs(label != "", " ("+label+")"), n.Count), plain)
		}
	case l.Source != "":
		t.para(t.label("Kernel log"), indent(labelW), fmt.Sprintf("no \"table full\" events in %s", l.Source), plain)
	}
	t.blank()
}

func (t *textWriter) breakdown(r *analyze.Report) {
	bd := r.Breakdown
	if bd.Total <= 0 {
		if msg := noBreakdown(r); msg != "" {
			t.para("", "", msg, t.p.dim)
			t.blank()
		}
		return
	}
	secs := breakdownSections(bd)
	var pairs [][2]section
	for i := 0; i+1 < len(secs); i += 2 {
		pairs = append(pairs, [2]section{secs[i], secs[i+1]})
	}
	t.sections(pairs, bd.Total)
}

// noBreakdown says why a report has no breakdown ("" when it has one):
// entries that were not listed are not an empty table.
func noBreakdown(r *analyze.Report) string {
	if r.Breakdown.Total > 0 {
		return ""
	}
	if l := r.Listing; l != nil && l.Detail != "" {
		msg := "No breakdown: " + l.Detail + "."
		if r.Table.Count > 0 {
			msg += fmt.Sprintf(" The table holds %s entries.", num(r.Table.Count))
		}
		return msg
	}
	if r.Table.Listed == 0 {
		return "The table is empty: no entries to break down."
	}
	return ""
}

// breakdownSections are the report's breakdown tables, in the order every
// format shows them (the text report pairs them side by side).
func breakdownSections(bd analyze.Breakdown) []section {
	flags := []row{{"assured", bd.Status["assured"]}, {"unreplied", bd.Status["unreplied"]},
		{"loopback", bd.Loopback}, {"NAT", bd.NAT}}
	var ttl, src, svc, dst []row
	for _, k := range analyze.TTLBuckets {
		ttl = append(ttl, row{k, bd.TTL[k]})
	}
	for _, a := range bd.TopSources {
		src = append(src, row{a.Addr, a.Count})
	}
	for _, sv := range bd.TopServices {
		svc = append(svc, row{fmt.Sprintf("%s/%d", sv.Proto, sv.Port), sv.Count})
	}
	for _, a := range bd.TopDestinations {
		dst = append(dst, row{a.Addr, a.Count})
	}
	other := mapRows(bd.Zones)
	for i := range other {
		other[i].k = "zone " + other[i].k
	}
	if len(bd.Marks) > 1 || bd.Marks["0"] != bd.Total {
		for _, m := range mapRows(bd.Marks) {
			other = append(other, row{"mark " + m.k, m.v})
		}
	}
	return []section{{"By protocol", mapRows(bd.L4)}, {"By TCP state", mapRows(bd.TCPState)},
		{"Flags", flags}, {"Time left", ttl}, {"Top sources", src}, {"Top services (dport)", svc},
		{"Top destinations", dst}, {"Zones & marks", other}}
}

// section is one breakdown table.
type section struct {
	title string
	rows  []row
}

// sections prints the breakdown tables in pairs side by side when two fit
// the width, else one under the other. The decision is made once, so
// that every pair's right column starts at the same place.
func (t *textWriter) sections(pairs [][2]section, total int64) {
	cw := 8
	for _, pair := range pairs {
		for _, s := range pair {
			for _, r := range s.rows {
				cw = max(cw, len(num(r.v)))
			}
		}
	}
	const gap = 2
	leftW, rightW := 0, 0
	for _, pair := range pairs {
		leftW = max(leftW, tableWidth(t.p, pair[0], total, cw, twoColumnKey))
		rightW = max(rightW, tableWidth(t.p, pair[1], total, cw, twoColumnKey))
	}
	if leftW+gap+rightW <= t.width {
		for _, pair := range pairs {
			l := table(t.p, pair[0], total, cw, twoColumnKey)
			r := table(t.p, pair[1], total, cw, twoColumnKey)
			for i := range max(len(l), len(r)) {
				left, right := "", ""
				if i < len(l) {
					left = l[i]
				}
				if i < len(r) {
					right = r[i]
				}
				t.line(Pad(left, leftW+gap) + right)
			}
			t.blank()
		}
		return
	}
	// One column: keys may be longer (an IPv6 address), up to what fits.
	kw := max(4, min(oneColumnKey, t.width-rowFixed(cw)))
	for _, pair := range pairs {
		for _, s := range pair {
			for _, l := range table(t.p, s, total, cw, kw) {
				t.line(l)
			}
			t.blank()
		}
	}
}

// Longest key shown in a breakdown row, with two tables side by side and with one.
const (
	twoColumnKey = 22
	oneColumnKey = 40
)

// rowFixed is a breakdown row's width without its key: "  KEY COUNT BAR SHARE".
func rowFixed(countW int) int { return 2 + 1 + countW + 1 + 10 + 1 + 4 }

func tableWidth(p painter, s section, total int64, countW, maxKey int) int {
	w := 0
	for _, l := range table(p, s, total, countW, maxKey) {
		w = max(w, VisibleWidth(l))
	}
	return w
}

// table renders a section as its title and "  key  count  bar  share" rows.
func table(p painter, s section, total int64, countW, maxKey int) []string {
	out := []string{p.bold(s.title)}
	kw := 4
	for _, r := range s.rows {
		kw = max(kw, VisibleWidth(r.k))
	}
	kw = min(kw, maxKey)
	for _, r := range s.rows {
		share := 0.0
		if total > 0 {
			share = float64(r.v) / float64(total)
		}
		out = append(out, fmt.Sprintf("  %s %*s %s %4s", Pad(TruncateMiddle(r.k, kw), kw), countW, num(r.v), Bar(share, 10), pctStr(share)))
	}
	if len(s.rows) == 0 {
		out = append(out, p.dim("  (none)"))
	}
	return out
}

func (t *textWriter) namespaces(r *analyze.Report) {
	if len(r.Namespaces) == 0 {
		return
	}
	p := t.p
	t.para("", "", fmt.Sprintf("Network namespaces (%d) — each one's count against the global max", len(r.Namespaces)), p.bold)
	// "  NAME INODE COUNT BAR SHARE"
	const fixed = 2 + 1 + 10 + 1 + 9 + 1 + 1 + 5
	barW := 20
	nameRoom := min(40, t.width-fixed-barW)
	if nameRoom < 10 {
		barW = max(5, t.width-fixed-10)
		nameRoom = max(4, t.width-fixed-barW)
	}
	nw := 10
	for _, n := range r.Namespaces {
		nw = max(nw, VisibleWidth(n.Name))
	}
	nw = min(nw, nameRoom)
	for _, n := range r.Namespaces {
		head := fmt.Sprintf("  %s %10d ", Pad(Truncate(n.Name, nw), nw), n.Inode)
		if n.Error != "" {
			t.para(head+" ", indent(VisibleWidth(head)+1), n.Error, p.dim)
			continue
		}
		u := 0.0
		if n.Max > 0 {
			u = float64(n.Count) / float64(n.Max)
		}
		lvl := analyze.Healthy
		switch {
		case u >= 0.9:
			lvl = analyze.Critical
		case u >= 0.75:
			lvl = analyze.Warning
		}
		t.line(fmt.Sprintf("%s%9s %s %5s", head, num(n.Count), p.sev(lvl, Bar(u, barW)), pctStr(u)))
	}
	t.blank()
}

func (t *textWriter) findings(r *analyze.Report, verbose bool) {
	p := t.p
	if len(r.Findings) == 0 {
		t.line(p.sev(analyze.Healthy, "No findings."))
	} else {
		t.line(p.bold(fmt.Sprintf("Findings (%d)", len(r.Findings))))
	}
	for _, f := range r.Findings {
		t.blank()
		head := p.sev(f.Severity, Pad("● "+strings.ToUpper(f.Severity), 10)) + " "
		toks := append([]string{p.bold(f.ID) + " "}, words(f.Summary, t.width-VisibleWidth(head))...)
		t.tokens(head, indent(VisibleWidth(head)), toks, " ")
		if verbose || f.Severity != analyze.Info {
			t.para(indent(4), indent(4), f.Explanation, p.dim)
		}
		t.evidence(f.Evidence)
		t.fixes(f.Fixes)
	}
}

func (t *textWriter) warnings(r *analyze.Report) {
	if len(r.Warnings) == 0 {
		return
	}
	t.blank()
	t.line(t.p.bold("Could not read everything:"))
	for _, wn := range r.Warnings {
		t.para("  - ", indent(4), wn, plain)
	}
}

// The columns of a finding's evidence and fixes: "    evidence  " and
// "    fix        $ ".
const (
	evidenceCol = 14
	fixLabelCol = 13
	commandCol  = fixLabelCol + 4 // where a command's text starts, after "  $ "
	continueCol = commandCol + 2  // a command's continuation lines and its comment
	minIndent   = 4               // a continuation line may move left to this column to fit
	lineJoin    = " \\"           // ends a command line that the next one continues
)

// evidence writes a finding's evidence: its scalar values as key=value
// words, wrapped; each list on lines of its own, one element a line.
func (t *textWriter) evidence(ev map[string]any) {
	if len(ev) == 0 {
		return
	}
	var scalars []string
	type block struct {
		key    string
		inline string   // a map: "key: a=1 b=2"
		items  []string // a list: "key:" then "- item" lines
	}
	var blocks []block
	for _, k := range slices.Sorted(maps.Keys(ev)) {
		switch v := normalize(ev[k]).(type) {
		case []any:
			if len(v) == 0 {
				scalars = append(scalars, k+"=[]")
				continue
			}
			b := block{key: k}
			for _, it := range v {
				b.items = append(b.items, evValue(it, true))
			}
			blocks = append(blocks, b)
		case map[string]any:
			if len(v) == 0 {
				scalars = append(scalars, k+"={}")
				continue
			}
			blocks = append(blocks, block{key: k, inline: evValue(v, true)})
		default:
			scalars = append(scalars, k+"="+evValue(v, false))
		}
	}
	first := "    evidence  "
	next := func() string {
		f := first
		first = indent(evidenceCol)
		return f
	}
	if len(scalars) > 0 {
		t.para(next(), indent(evidenceCol), strings.Join(scalars, " "), plain)
	}
	for _, b := range blocks {
		if b.items == nil {
			t.para(next(), indent(evidenceCol+2), b.key+": "+b.inline, plain)
			continue
		}
		t.line(next() + b.key + ":")
		for _, it := range b.items {
			t.para(indent(evidenceCol+2)+"- ", indent(evidenceCol+4), it, plain)
		}
	}
}

// normalize turns an evidence value into what its JSON decodes to
// (numbers kept as written), so that structs and typed slices print
// like the JSON report shows them.
func normalize(v any) any {
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return fmt.Sprint(v)
	}
	return out
}

// evValue formats a normalized value: scalars as text, an object as its
// key=value pairs (when flat is set) and anything nested as compact JSON.
func evValue(v any, flat bool) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case map[string]any:
		if flat {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(x)) {
				parts = append(parts, k+"="+evValue(x[k], false))
			}
			return strings.Join(parts, " ")
		}
	}
	j, _ := json.Marshal(v)
	return string(j)
}

// fixes writes a finding's fix lines: comments ("# …") wrapped as
// comments, commands after "$ ". A command that does not fit is broken
// at the blanks the shell splits words at, each line but the last ending
// in " \\" (the shell joins them back into the same command); a comment
// at its end goes to the lines below it. A word wider than the line is
// never broken, and a fix that is not shell (its first word names no
// program, as in a line of YAML) keeps its text on one line.
func (t *textWriter) fixes(fixes []string) {
	for i, fx := range fixes {
		lbl := indent(fixLabelCol)
		if i == 0 {
			lbl = Pad("    fix", fixLabelCol)
		}
		if strings.HasPrefix(fx, "#") {
			t.para(lbl+"    # ", indent(commandCol)+"# ", strings.TrimSpace(strings.TrimPrefix(fx, "#")), plain)
			continue
		}
		for _, l := range Command(fx, t.width, lbl+"  $ ", continueCol) {
			t.line(l)
		}
	}
}

// Command lays out a shell command to copy for a width of width columns:
// after first on one line when it fits; else broken at the blanks between
// its words, each line but the last ending in " \\" so that the lines
// paste as the same command, the continuation lines indented to column
// cont (or left of it, down to column 4, for a long word), and its
// trailing comment wrapped under it. A line that is not a plain command
// (quotes left open, a heredoc) is left whole. A command of several lines
// is laid out by commandLines.
func Command(cmd string, width int, first string, cont int) []string {
	if strings.Contains(cmd, "\n") {
		return commandLines(cmd, width, first, cont)
	}
	fw := VisibleWidth(first)
	if fw+VisibleWidth(cmd) <= width {
		return []string{first + cmd}
	}
	argv, comment, ok := shellCommand(cmd)
	if !ok || len(argv) == 0 {
		return []string{first + cmd}
	}
	lines := []string{strings.Join(argv, " ")}
	if fw+VisibleWidth(lines[0]) > width && isCommandName(argv[0]) {
		lines = lay(argv, " ", width-fw-len(lineJoin), width-cont-len(lineJoin))
	}
	var out []string
	for j, l := range lines {
		if j < len(lines)-1 {
			l += lineJoin
		}
		if j == 0 {
			out = append(out, first+l)
			continue
		}
		col := cont
		if w := VisibleWidth(l); col+w > width && width-w >= minIndent {
			col = width - w // a long word: move left to fit
		}
		out = append(out, indent(col)+l)
	}
	if comment != "" {
		out = append(out, Wrap(comment, width, indent(cont)+"# ", indent(cont)+"# ")...)
	}
	return out
}

func counter(p painter, name string, v uint64, s analyze.StatsInfo, bad bool) string {
	out := fmt.Sprintf("%s %d", name, v)
	if r, ok := s.PerSecond[name]; ok && r > 0 {
		out += fmt.Sprintf(" (%.1f/s)", r)
	}
	if bad && v > 0 {
		return p.sev(analyze.Warning, out)
	}
	return out
}

type row struct {
	k string
	v int64
}

func mapRows(m map[string]int64) []row {
	rows := make([]row, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			rows = append(rows, row{k, m[k]})
		}
	}
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(b.v, a.v) })
	return rows
}

// Bar draws frac (0 to 1, clamped) as width cells of block elements, in
// eighths of a cell: the bars of the report and of top. A width of 0 or
// less is "".
func Bar(frac float64, width int) string {
	if width <= 0 {
		return ""
	}
	frac = min(max(frac, 0), 1)
	eighths := int(frac*float64(width)*8 + 0.5)
	full, part := eighths/8, eighths%8
	s := strings.Repeat("█", full)
	if part > 0 && full < width {
		s += string([]rune("▏▎▍▌▋▊▉")[part-1])
		full++
	}
	return s + strings.Repeat(" ", width-full)
}

func gauge(frac float64, width int) string { return "[" + Bar(frac, width) + "]" }

func pctStr(x float64) string {
	switch {
	case x == 0:
		return "0%"
	case x < 0.01:
		return "<1%"
	case x >= 0.995 && x < 1:
		return ">99%"
	}
	return fmt.Sprintf("%.0f%%", x*100)
}

func num(n int64) string {
	if n < 0 {
		return "?"
	}
	s := fmt.Sprint(n)
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	return string(out)
}

func human(n int64) string {
	if n <= 0 {
		return "?"
	}
	return analyze.HumanBytes(n)
}

func perEntry(t analyze.TableInfo) int64 {
	if t.SlabSize > 0 {
		return t.SlabSize
	}
	if t.ObjectSize > 0 {
		return t.ObjectSize
	}
	return 256
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ifs(c bool, s string) string {
	if c {
		return s
	}
	return ""
}
