package render

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
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

// Text writes the human report.
func Text(w io.Writer, r *analyze.Report, o TextOptions) error {
	if o.Width <= 0 {
		o.Width = 100
	}
	p := painter{o.Color}
	var b strings.Builder
	h := r.Host
	ns := h.NetNS
	if h.NetNSInode != 0 {
		ns = fmt.Sprintf("%s [%d]", ns, h.NetNSInode)
	}
	if h.Source == "file" {
		fmt.Fprintf(&b, "%s entries from %s (a listing only: the host's table size, counters and kernel log are not known)\n\n",
			p.bold("ctdoctor"), h.NetNS)
	} else {
		fmt.Fprintf(&b, "%s %s · kernel %s · netns %s · %d CPUs · %s RAM · entries from %s\n\n",
			p.bold("ctdoctor"), orDash(h.Hostname), orDash(h.Kernel), ns, h.CPUs, human(int64(h.MemBytes)), orDash(h.Source))
	}

	label := strings.ToUpper(r.Verdict.Level)
	fmt.Fprintf(&b, "%s  %s\n\n", p.sev(r.Verdict.Level, fmt.Sprintf(" %-8s", label)), p.bold(r.Verdict.Reason))

	t := r.Table
	gaugeLevel := analyze.Healthy
	switch {
	case t.Usage >= 0.9:
		gaugeLevel = analyze.Critical
	case t.Usage >= 0.75:
		gaugeLevel = analyze.Warning
	}
	fmt.Fprintf(&b, "%-10s %s %s  %s / %s entries\n", p.bold("Table"), p.sev(gaugeLevel, gauge(t.Usage, 30)),
		pctStr(t.Usage), num(t.Count), num(t.Max))
	if t.Buckets > 0 {
		fmt.Fprintf(&b, "%-10s %s buckets (%.2f entries/bucket) · memory %s now, %s when full (%s/entry)\n", "",
			num(t.Buckets), t.EntriesPerBucket, human(t.MemoryBytes), human(t.MemoryAtMaxBytes), human(perEntry(t)))
	}
	if t.DefaultMax > 0 {
		fmt.Fprintf(&b, "%-10s kernel default for this RAM: %s buckets / %s max%s\n", "", num(t.DefaultBuckets), num(t.DefaultMax),
			ifs(t.Legacy, " (legacy ip_conntrack)"))
	}
	s := r.Stats
	if s.Available {
		fmt.Fprintf(&b, "%-10s %s\n", p.bold("Counters"), strings.Join([]string{
			counter(p, "drop", s.Drop, s, true), counter(p, "early_drop", s.EarlyDrop, s, false),
			counter(p, "insert_failed", s.InsertFailed, s, true), counter(p, "clash_resolve", s.ClashResolve, s, false),
			counter(p, "chaintoolong", s.ChainTooLong, s, true), counter(p, "invalid", s.Invalid, s, false),
		}, " · "))
		fmt.Fprintf(&b, "%-10s %s\n", "", p.dim(fmt.Sprintf("from %s%s", s.Source, ifs(s.Interval > 0, fmt.Sprintf(", rates over %.1f s", s.Interval)))))
	} else {
		fmt.Fprintf(&b, "%-10s %s\n", p.bold("Counters"), p.dim("unavailable"))
	}
	l := r.Log
	switch {
	case l.TableFullEvents > 0:
		fmt.Fprintf(&b, "%-10s %s \"table full, dropping packet\" events (+%d suppressed), first %s, last %s\n", p.bold("Kernel log"),
			p.sev(analyze.Critical, num(int64(l.TableFullEvents))), l.Suppressed, orDash(l.First), orDash(l.Last))
		for _, n := range l.NetNS {
			fmt.Fprintf(&b, "%-10s   netns %d%s: %d\n", "", n.Inode, ifs(n.Name != "", " ("+n.Name+")"), n.Count)
		}
	case l.Source != "":
		fmt.Fprintf(&b, "%-10s no \"table full\" events in %s\n", p.bold("Kernel log"), l.Source)
	}
	b.WriteString("\n")

	bd := r.Breakdown
	if bd.Total > 0 {
		total := bd.Total
		left := table(p, "By protocol", mapRows(bd.L4), total)
		right := table(p, "By TCP state", mapRows(bd.TCPState), total)
		side(&b, left, right)
		statusRows := []row{{"assured", bd.Status["assured"]}, {"unreplied", bd.Status["unreplied"]},
			{"loopback", bd.Loopback}, {"NAT", bd.NAT}}
		var ttl []row
		for _, k := range analyze.TTLBuckets {
			ttl = append(ttl, row{k, bd.TTL[k]})
		}
		side(&b, table(p, "Flags", statusRows, total), table(p, "Time left", ttl, total))
		var src, svc []row
		for _, a := range bd.TopSources {
			src = append(src, row{a.Addr, a.Count})
		}
		for _, sv := range bd.TopServices {
			svc = append(svc, row{fmt.Sprintf("%s/%d", sv.Proto, sv.Port), sv.Count})
		}
		side(&b, table(p, "Top sources", src, total), table(p, "Top services (dport)", svc, total))
		var dst []row
		for _, a := range bd.TopDestinations {
			dst = append(dst, row{a.Addr, a.Count})
		}
		other := mapRows(bd.Zones)
		for i := range other {
			other[i].k = "zone " + other[i].k
		}
		if len(bd.Marks) > 1 || bd.Marks["0"] != total {
			for _, m := range mapRows(bd.Marks) {
				other = append(other, row{"mark " + m.k, m.v})
			}
		}
		side(&b, table(p, "Top destinations", dst, total), table(p, "Zones & marks", other, total))
	} else if t.Listed == 0 {
		b.WriteString(p.dim("The table is empty: no entries to break down.\n\n"))
	}

	if len(r.Namespaces) > 0 {
		fmt.Fprintf(&b, "%s\n", p.bold(fmt.Sprintf("Network namespaces (%d) — each one's count against the global max", len(r.Namespaces))))
		nw := 10
		for _, n := range r.Namespaces {
			nw = max(nw, min(len(n.Name), 40))
		}
		for _, n := range r.Namespaces {
			name := n.Name
			if len(name) > nw {
				name = name[:nw-1] + "…"
			}
			if n.Error != "" {
				fmt.Fprintf(&b, "  %-*s %12d  %s\n", nw, name, n.Inode, p.dim(n.Error))
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
			fmt.Fprintf(&b, "  %-*s %12d %9s %s %5s\n", nw, name, n.Inode, num(n.Count), p.sev(lvl, bar(u, 20)), pctStr(u))
		}
		b.WriteString("\n")
	}
	if len(r.Findings) == 0 {
		b.WriteString(p.sev(analyze.Healthy, "No findings.") + "\n")
	} else {
		fmt.Fprintf(&b, "%s\n", p.bold(fmt.Sprintf("Findings (%d)", len(r.Findings))))
	}
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "\n%s %s  %s\n", p.sev(f.Severity, fmt.Sprintf("● %-8s", strings.ToUpper(f.Severity))), p.bold(f.ID), f.Summary)
		if o.Verbose || f.Severity != analyze.Info {
			for _, line := range wrap(f.Explanation, o.Width-4) {
				fmt.Fprintf(&b, "    %s\n", p.dim(line))
			}
		}
		if ev := evidence(f.Evidence); ev != "" {
			for i, line := range wrap(ev, o.Width-14) {
				fmt.Fprintf(&b, "    %-9s %s\n", ifs(i == 0, "evidence"), line)
			}
		}
		for i, fx := range f.Fixes {
			prefix := "  $ "
			if strings.HasPrefix(fx, "#") {
				prefix = "    "
			}
			fmt.Fprintf(&b, "    %-9s%s%s\n", ifs(i == 0, "fix"), prefix, fx)
		}
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintf(&b, "\n%s\n", p.bold("Could not read everything:"))
		for _, wn := range r.Warnings {
			fmt.Fprintf(&b, "  - %s\n", wn)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
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

const colWidth = 48

// table renders rows as "name  count  bar  share" lines, colWidth wide.
func table(p painter, title string, rows []row, total int64) []string {
	out := []string{p.bold(title) + strings.Repeat(" ", max(0, colWidth-len(title)))}
	kw := 4
	for _, r := range rows {
		kw = max(kw, len(r.k))
	}
	kw = min(kw, 22)
	for _, r := range rows {
		share := 0.0
		if total > 0 {
			share = float64(r.v) / float64(total)
		}
		k := r.k
		if len(k) > kw {
			k = k[:kw-1] + "…"
		}
		line := fmt.Sprintf("  %-*s %8s %s %4s", kw, k, num(r.v), bar(share, 10), pctStr(share))
		pad := colWidth - visibleLen(line)
		out = append(out, line+strings.Repeat(" ", max(0, pad)))
	}
	if len(rows) == 0 {
		out = append(out, p.dim("  (none)")+strings.Repeat(" ", colWidth-8))
	}
	return out
}

func side(b *strings.Builder, left, right []string) {
	for i := 0; i < max(len(left), len(right)); i++ {
		l, r := strings.Repeat(" ", colWidth), ""
		if i < len(left) {
			l = left[i]
		}
		if i < len(right) {
			r = right[i]
		}
		b.WriteString(strings.TrimRight(l+"  "+r, " ") + "\n")
	}
	b.WriteString("\n")
}

func visibleLen(s string) int {
	n, esc := 0, false
	for _, r := range s {
		switch {
		case r == '\x1b':
			esc = true
		case esc && r == 'm':
			esc = false
		case !esc:
			n++
		}
	}
	return n
}

func bar(frac float64, width int) string {
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

func gauge(frac float64, width int) string { return "[" + bar(frac, width) + "]" }

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

func evidence(ev map[string]any) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ev)) {
		v := ev[k]
		switch x := v.(type) {
		case []map[string]any, []analyze.AddrCount, map[string]int64, []string:
			j, _ := json.Marshal(x)
			parts = append(parts, fmt.Sprintf("%s=%s", k, j))
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

func wrap(s string, width int) []string {
	if width < 20 {
		width = 20
	}
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
