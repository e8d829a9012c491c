package render

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Chart is a timeline: named series sampled at the same times, an optional
// limit drawn as a horizontal line, and marks on the samples where
// something went wrong (drops).
type Chart struct {
	Title  string
	Times  []float64 // seconds since the start
	Series []Series  // Series[0] is the main one (drawn as bars in the terminal)
	// Limit is drawn as a horizontal line when > 0 (the table's max).
	Limit      float64
	LimitLabel string
	// Marks flags samples (len(Times) long, or nil); MarkLabel names them.
	Marks     []bool
	MarkLabel string
	// TimeLabel formats an axis time; nil prints hh:mm:ss.
	TimeLabel func(seconds float64) string
}

// Series is one named line of a chart.
type Series struct {
	Name   string
	Values []float64
	// Color is an SVG colour; "" picks one from the palette.
	Color string
}

func (c *Chart) timeLabel(s float64) string {
	if c.TimeLabel != nil {
		return c.TimeLabel(s)
	}
	d := int64(math.Round(s))
	return fmt.Sprintf("%02d:%02d:%02d", d/3600, d/60%60, d%60)
}

var eighths = []rune(" ▁▂▃▄▅▆▇█")

// column maps a sample index to a chart column.
func columns(n, width int) []int {
	// For each column, the index of the last sample it covers; several
	// samples per column keep the highest value.
	out := make([]int, width)
	for x := range width {
		out[x] = min(n-1, (x+1)*n/width-1)
		if out[x] < 0 {
			out[x] = 0
		}
	}
	return out
}

// resample returns one value per column: the maximum of the samples the
// column covers (so that a short peak is not lost).
func resample(v []float64, width int) []float64 { return resampleBy(v, width, math.Max) }

// resampleMarks returns one mark per column, set if any sample the column
// covers is marked; none when the marks do not match the n samples.
func resampleMarks(m []bool, n, width int) []bool {
	if len(m) != n {
		return make([]bool, width)
	}
	return resampleBy(m, width, func(a, b bool) bool { return a || b })
}

// resampleBy fits v to width columns: stretched when shorter, and merged
// column by column with merge when longer.
func resampleBy[T any](v []T, width int, merge func(a, b T) T) []T {
	n := len(v)
	out := make([]T, width)
	if n == 0 {
		return out
	}
	if n <= width {
		// Stretch: each sample spans width/n columns.
		for x := range width {
			out[x] = v[min(n-1, x*n/width)]
		}
		return out
	}
	lo := 0
	for x, hi := range columns(n, width) {
		m := v[lo]
		for i := lo + 1; i <= hi; i++ {
			m = merge(m, v[i])
		}
		out[x] = m
		lo = min(hi+1, n-1)
	}
	return out
}

// TerminalChart draws the chart's main series as bars, height rows tall,
// in width columns (labels included), with the limit as a dotted line and
// the marks on a line below; then one sparkline per other series. It uses
// no colour: block characters carry it.
func TerminalChart(w io.Writer, c Chart, width, height int) error {
	if len(c.Series) == 0 || len(c.Times) == 0 {
		return nil
	}
	if width < 40 {
		width = 40
	}
	if height < 3 {
		height = 3
	}
	main := c.Series[0]
	top := c.Limit
	for _, v := range main.Values {
		top = math.Max(top, v)
	}
	if top <= 0 {
		top = 1
	}
	label := func(v float64) string { return num(int64(math.Round(v))) }
	lw := max(len(label(top)), len(label(c.Limit)), len(c.MarkLabel))
	plotW := width - lw - 2
	vals := resample(main.Values, plotW)
	marks := resampleMarks(c.Marks, len(main.Values), plotW)
	limitRow := -1
	if c.Limit > 0 {
		limitRow = int(math.Round(c.Limit / top * float64(height))) // rows from the bottom whose top edge is the limit
	}
	var b strings.Builder
	if c.Title != "" {
		b.WriteString(c.Title)
		b.WriteString("\n")
	}
	for row := height; row >= 1; row-- {
		lbl := ""
		switch {
		case row == height:
			lbl = label(top)
		case row == limitRow && c.Limit != top:
			lbl = label(c.Limit)
		}
		tick := "│"
		if lbl != "" {
			tick = "┤"
		}
		fmt.Fprintf(&b, "%*s %s", lw, lbl, tick)
		for x := range plotW {
			fill := vals[x] / top * float64(height) // in rows
			cell := (fill - float64(row-1)) * 8
			switch {
			case cell >= 8:
				b.WriteRune('█')
			case cell >= 1:
				b.WriteRune(eighths[int(cell)])
			case row == limitRow:
				b.WriteRune('┄')
			case cell > 0 && row == 1:
				b.WriteRune('▁')
			default:
				b.WriteRune(' ')
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%*s └%s\n", lw, "0", strings.Repeat("─", plotW))
	if c.Marks != nil {
		hit := false
		for _, m := range marks {
			hit = hit || m
		}
		if hit {
			fmt.Fprintf(&b, "%*s  ", lw, c.MarkLabel)
			for _, m := range marks {
				if m {
					b.WriteRune('▲')
				} else {
					b.WriteRune(' ')
				}
			}
			b.WriteString("\n")
		}
	}
	// Time axis: start, middle and end.
	first, last := c.Times[0], c.Times[len(c.Times)-1]
	l0, l1, l2 := c.timeLabel(first), c.timeLabel((first+last)/2), c.timeLabel(last)
	axis := []rune(strings.Repeat(" ", plotW))
	put := func(at int, s string) {
		at = max(0, min(at, plotW-len(s)))
		copy(axis[at:], []rune(s))
	}
	put(0, l0)
	put(plotW/2-len(l1)/2, l1)
	put(plotW-len(l2), l2)
	fmt.Fprintf(&b, "%*s  %s\n", lw, "", string(axis))
	if c.Limit > 0 && c.LimitLabel != "" && limitRow >= 1 {
		fmt.Fprintf(&b, "%*s  %s\n", lw, "", "┄┄ "+c.LimitLabel)
	}
	if len(c.Series) > 1 {
		b.WriteString("\n")
		nw := 0
		for _, s := range c.Series[1:] {
			nw = max(nw, len(s.Name))
		}
		sw := max(10, width-nw-2-12)
		for _, s := range c.Series[1:] {
			peak := 0.0
			for _, v := range s.Values {
				peak = math.Max(peak, v)
			}
			last := 0.0
			if len(s.Values) > 0 {
				last = s.Values[len(s.Values)-1]
			}
			fmt.Fprintf(&b, "%-*s  %s %10s\n", nw, s.Name, Sparkline(s.Values, sw, peak), label(last))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Sparkline draws values in width block characters scaled to top (0: their
// maximum); a zero stays blank, any positive value shows at least ▁.
func Sparkline(values []float64, width int, top float64) string {
	if top <= 0 {
		for _, v := range values {
			top = math.Max(top, v)
		}
	}
	vals := resample(values, width)
	var b strings.Builder
	for _, v := range vals {
		switch {
		case v <= 0 || top <= 0:
			b.WriteRune(' ')
		default:
			i := int(math.Round(v / top * 8))
			b.WriteRune(eighths[max(1, min(i, 8))])
		}
	}
	return b.String()
}
