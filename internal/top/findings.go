package top

import (
	"fmt"
	"strings"

	"github.com/ctdoctor/ctdoctor/render"
)

// findingsScreen lists the findings with the selected one's details, or
// its fix when showFix is set, scrolled by scroll lines. It returns the
// lines and the scroll it used (kept within the text).
func (p *painter) findingsScreen(sel int, showFix bool, scroll int) ([]string, int) {
	st := p.st
	f := p.f
	out := []string{p.title("")}
	var foot []string
	if p.o.Footer != "" {
		foot = []string{p.line(p.o.Footer)}
	}
	avail := p.o.Height - len(out) - len(foot)
	var body []string
	switch {
	case f.Report == nil:
		body = []string{st.dim.Render("Waiting for the first diagnosis…")}
	case len(f.Report.Findings) == 0:
		body = []string{st.good.Render("No findings: nothing to fix.")}
	default:
		body, scroll = p.findingsBody(sel, showFix, scroll, avail)
	}
	out = append(out, body...)
	for len(out) < p.o.Height-len(foot) {
		out = append(out, "")
	}
	out = append(out, foot...)
	for i, l := range out {
		out[i] = p.line(l)
	}
	if len(out) > p.o.Height {
		out = out[:p.o.Height]
	}
	return out, scroll
}

func (p *painter) findingsBody(sel int, showFix bool, scroll, avail int) ([]string, int) {
	st := p.st
	fs := p.f.Report.Findings
	sel = min(max(sel, 0), len(fs)-1)
	out := []string{st.bold.Render(fmt.Sprintf("Findings (%d)", len(fs))) + st.dim.Render(fmt.Sprintf("  %d/%d", sel+1, len(fs)))}
	listH := min(len(fs), max(3, (avail-1)/3))
	if showFix {
		listH = min(len(fs), 3)
	}
	first := min(max(0, sel-listH/2), len(fs)-listH)
	for i := first; i < first+listH; i++ {
		fd := fs[i]
		if i == sel {
			plain := fmt.Sprintf("▶ %-8s %s  %s", strings.ToUpper(fd.Severity), fd.ID, fd.Summary)
			out = append(out, st.selected.Render(render.Pad(fit(plain, p.w, false), p.w)))
			continue
		}
		out = append(out, p.line("  "+st.sev(fd.Severity).Render(fmt.Sprintf("%-8s", strings.ToUpper(fd.Severity)))+
			" "+fd.ID+"  "+fit(fd.Summary, p.w, false)))
	}
	out = append(out, "")
	fd := fs[sel]
	var detail []string
	if showFix {
		detail = append(detail, st.bold.Render("Fix for "+fd.ID+":"))
		if len(fd.Fixes) == 0 {
			detail = append(detail, st.dim.Render("  (this finding has no command to run)"))
		}
		detail = append(detail, fixLines(fd.Fixes, p.w, st)...)
	} else {
		detail = append(detail, wrapWords(fd.Summary, p.w, st.bold.Render(fd.ID)+"  ", "  ")...)
		if fd.Explanation != "" {
			for _, l := range wrapWords(fd.Explanation, p.w, "  ", "  ") {
				detail = append(detail, st.dim.Render(l))
			}
		}
		detail = append(detail, "", st.key.Render("enter")+" shows the fix"+fmt.Sprintf(" (%d lines)", len(fd.Fixes)))
	}
	room := max(1, avail-len(out))
	scroll = min(scroll, max(0, len(detail)-room))
	detail = detail[scroll:]
	if len(detail) > room {
		hidden := len(detail) - (room - 1)
		detail = detail[:room-1]
		if showFix {
			detail = append(detail, st.dim.Render(fmt.Sprintf("↓ %d more lines (↓ or space scrolls; p prints it whole)", hidden)))
		} else {
			detail = append(detail, st.dim.Render("↓ more: enter shows the fix"))
		}
	}
	return append(out, detail...), scroll
}

// fixLines lays out a finding's fixes: comments as wrapped "# " lines,
// commands after "$ " wrapped between words with a shell line
// continuation (" \"), so that a copied command still runs.
func fixLines(fixes []string, width int, st styles) []string {
	var out []string
	for _, fx := range fixes {
		for i, ln := range strings.Split(fx, "\n") {
			t := strings.TrimSpace(ln)
			switch {
			case i > 0:
				for len(ln) > 0 {
					var head string
					head, ln = cut(ln, width-4)
					out = append(out, "    "+head)
					if head == "" {
						break
					}
				}
			case strings.HasPrefix(t, "#"):
				for _, l := range wrapWords(strings.TrimSpace(strings.TrimPrefix(t, "#")), width, "  # ", "  # ") {
					out = append(out, st.dim.Render(l))
				}
			default:
				for _, l := range shellLines(t, width, "$ ", "    ") {
					out = append(out, st.bold.Render(l))
				}
			}
		}
	}
	return out
}

// shellLines breaks a shell command between its words (never inside a
// quoted string) into lines of at most width columns, each but the last
// ended by " \". A word wider than a line is cut (it then no longer runs
// as copied; the kernel's names are never that long at 60 columns).
func shellLines(cmd string, width int, first, rest string) []string {
	var lines []string
	cur, pre := "", first
	room := func() int { return width - render.VisibleWidth(pre) - 2 }
	for _, w := range shellWords(cmd) {
		switch {
		case cur == "":
			cur = w
		case render.VisibleWidth(cur)+1+render.VisibleWidth(w) <= room():
			cur += " " + w
		default:
			lines = append(lines, pre+cur+" \\")
			cur, pre = w, rest
		}
		for render.VisibleWidth(cur) > room()+2 {
			head, tail := cut(cur, room()+2)
			lines = append(lines, pre+head)
			cur, pre = tail, rest
		}
	}
	return append(lines, pre+cur)
}

// shellWords splits a command at the blanks outside quotes, keeping each
// word as written.
func shellWords(s string) []string {
	var words []string
	var b strings.Builder
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == ' ' || r == '\t':
			if b.Len() > 0 {
				words = append(words, b.String())
				b.Reset()
			}
			continue
		}
		b.WriteRune(r)
	}
	if b.Len() > 0 {
		words = append(words, b.String())
	}
	return words
}

// help is the keys and what the screen shows.
func (p *painter) help() []string {
	st := p.st
	keys := [][2]string{
		{"q, ctrl+c", "quit"},
		{"?", "this help (?, esc or enter closes it)"},
		{"s", "sort the tables: by entries, by change since the previous refresh, by name"},
		{"/", "filter the tables' rows by text (enter keeps it, esc clears it)"},
		{"esc", "clear the filter"},
		{"n, tab, →", "next namespace (--netns more than once, or --all-netns)"},
		{"p, shift+tab, ←", "previous namespace"},
		{"f, enter", "the findings: ↑/↓ select one, enter shows its fix, esc goes back"},
		{"p (findings)", "quit and print the selected finding's fix, whole, to copy it"},
	}
	out := []string{p.title(""), st.bold.Render("Keys")}
	for _, k := range keys {
		out = append(out, wrapWords(k[1], p.w, "  "+st.key.Render(fmt.Sprintf("%-16s", k[0]))+" ", strings.Repeat(" ", 19))...)
	}
	out = append(out, "", st.bold.Render("The screen"))
	for _, s := range []string{
		"Table: the entries against nf_conntrack_max, and when the table will be full at its recent growth.",
		"Rates: new entries, drops, early drops and insert failures per second, from the per-CPU counters.",
		"Usage and Drops: the session's history. Each table row: entries now and the change since the previous refresh.",
		"Mode: events (the kernel's conntrack events keep the counts between full listings) or polling (every refresh lists the table).",
	} {
		out = append(out, wrapWords(s, p.w, "  ", "  ")...)
	}
	if len(out) > p.o.Height {
		out = out[:p.o.Height]
	}
	for i, l := range out {
		out[i] = p.line(l)
	}
	return out
}
