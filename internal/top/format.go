package top

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/render"
)

// num formats a count with thousands separators: 53,232.
func num(n int64) string {
	if n < 0 {
		return "-" + num(-n)
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// delta formats a row's change since the previous refresh: "+12", "-3",
// and "" for no change.
func delta(d int64) string {
	switch {
	case d > 0:
		return "+" + num(d)
	case d < 0:
		return num(d)
	}
	return ""
}

// rate formats a per-second rate: "—" when not known yet (negative), one
// decimal below 10, whole numbers with separators above.
func rate(r float64) string {
	switch {
	case r < 0 || math.IsNaN(r):
		return "—"
	case r == 0:
		return "0"
	case r < 10:
		return fmt.Sprintf("%.1f", r)
	}
	return num(int64(math.Round(r)))
}

// pct formats a fraction as a percentage: "20%", "<1%" for a small
// non-zero one, ">99%" just short of full.
func pct(x float64) string {
	switch {
	case x <= 0:
		return "0%"
	case x < 0.01:
		return "<1%"
	case x >= 0.995 && x < 1:
		return ">99%"
	}
	return fmt.Sprintf("%.0f%%", x*100)
}

// timeToFull says when the table fills at the recent growth rate (see
// watch.Frame.TimeToFull): 0 is full now, a negative value not growing or
// not known.
func timeToFull(d time.Duration, max int64) string {
	switch {
	case max <= 0:
		return "limit unknown"
	case d < 0:
		return "not filling up"
	case d == 0:
		return "FULL now"
	}
	return "full in " + shortDuration(d)
}

// shortDuration rounds d to two units: "45s", "3m12s", "2h05m", "3d04h".
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	case d < 100*24*time.Hour:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
	return ">99d"
}

// spark draws a series right-aligned in width cells: one cell a sample
// while they fit, the newest at the right; merged (by maximum) to fit
// when there are more. top scales it (0: the series' maximum).
func spark(vals []float64, width int, top float64) string {
	if width <= 0 {
		return ""
	}
	if len(vals) == 0 {
		return strings.Repeat(" ", width)
	}
	if len(vals) < width {
		return strings.Repeat(" ", width-len(vals)) + render.Sparkline(vals, len(vals), top)
	}
	return render.Sparkline(vals, width, top)
}

// fit shortens s (no escapes) to n columns, cutting its middle when
// middle is set (addresses), else its end.
func fit(s string, n int, middle bool) string {
	if middle {
		return render.TruncateMiddle(s, n)
	}
	return render.Truncate(s, n)
}

// padLeft right-aligns s (no escapes) in n columns.
func padLeft(s string, n int) string {
	if w := render.VisibleWidth(s); w < n {
		return strings.Repeat(" ", n-w) + s
	}
	return s
}

// wrapWords breaks prose into lines of at most width columns, first line
// prefixed by first and the others by rest; a word wider than a line is
// cut.
func wrapWords(s string, width int, first, rest string) []string {
	var lines []string
	cur, pre := "", first
	room := func() int { return max(1, width-render.VisibleWidth(pre)) }
	flush := func() {
		lines = append(lines, pre+cur)
		cur, pre = "", rest
	}
	for _, w := range strings.Fields(s) {
		for render.VisibleWidth(w) > room() {
			if cur != "" {
				flush()
			}
			head, tail := cut(w, room())
			if head == "" {
				break
			}
			cur, w = head, tail
			flush()
		}
		if w == "" {
			continue
		}
		switch {
		case cur == "":
			cur = w
		case render.VisibleWidth(cur)+1+render.VisibleWidth(w) <= room():
			cur += " " + w
		default:
			flush()
			cur = w
		}
	}
	if cur != "" || len(lines) == 0 {
		lines = append(lines, pre+cur)
	}
	return lines
}

// cut splits s (no escapes) after at most n columns.
func cut(s string, n int) (head, tail string) {
	w := 0
	for i, r := range s {
		rw := render.VisibleWidth(string(r))
		if w+rw > n {
			return s[:i], s[i:]
		}
		w += rw
	}
	return s, ""
}
