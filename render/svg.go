package render

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// SVGOptions size an SVG chart.
type SVGOptions struct {
	Width, Height int // pixels; 0 = 960 × 480
	Subtitle      string
}

var palette = []string{"#1f2937", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#9ca3af", "#b45309"}

// SVG writes the chart as a standalone SVG line chart: one line per series
// (the first drawn heavier), the limit as a dashed red line, the marked
// samples as red bands, a time axis, a value axis and a legend.
func SVG(w io.Writer, c Chart, o SVGOptions) error {
	if o.Width <= 0 {
		o.Width = 960
	}
	if o.Height <= 0 {
		o.Height = 480
	}
	const left, right, top, bottom = 80, 190, 56, 48
	pw, ph := float64(o.Width-left-right), float64(o.Height-top-bottom)
	if pw < 50 || ph < 50 {
		return fmt.Errorf("svg: %d×%d is too small for a chart", o.Width, o.Height)
	}
	var b bytes.Buffer
	esc := func(s string) string {
		var e bytes.Buffer
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="system-ui, sans-serif" font-size="12">`+"\n",
		o.Width, o.Height, o.Width, o.Height)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(c.Title))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", o.Width, o.Height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold" fill="#111827">%s</text>`+"\n", left, esc(c.Title))
	if o.Subtitle != "" {
		fmt.Fprintf(&b, `<text x="%d" y="42" fill="#4b5563">%s</text>`+"\n", left, esc(o.Subtitle))
	}
	n := len(c.Times)
	t0, t1 := 0.0, 1.0
	if n > 0 {
		t0, t1 = c.Times[0], c.Times[n-1]
		if t1 <= t0 {
			t1 = t0 + 1
		}
	}
	ymax := c.Limit
	for _, s := range c.Series {
		for _, v := range s.Values {
			ymax = math.Max(ymax, v)
		}
	}
	step := niceStep(ymax / 5)
	ymax = math.Max(step, math.Ceil(ymax*1.05/step)*step)
	x := func(t float64) float64 { return left + (t-t0)/(t1-t0)*pw }
	y := func(v float64) float64 { return top + ph - v/ymax*ph }

	// Marked samples (drops): red bands behind the lines.
	if len(c.Marks) == n && n > 1 {
		fmt.Fprintf(&b, `<g fill="#fecaca" stroke="none">`)
		for i := 0; i < n; i++ {
			if !c.Marks[i] {
				continue
			}
			j := i
			for j+1 < n && c.Marks[j+1] {
				j++
			}
			from := c.Times[max(i-1, 0)]
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f"/>`, x(from), top, math.Max(1, x(c.Times[j])-x(from)), ph)
			i = j
		}
		b.WriteString("</g>\n")
	}
	// Value grid and labels.
	b.WriteString(`<g stroke="#e5e7eb" stroke-width="1">`)
	for v := 0.0; v <= ymax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f"/>`, left, y(v), left+pw, y(v))
	}
	b.WriteString("</g>\n")
	b.WriteString(`<g fill="#374151" text-anchor="end">`)
	for v := 0.0; v <= ymax+step/2; v += step {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f">%s</text>`, left-6, y(v)+4, num(int64(v)))
	}
	b.WriteString("</g>\n")
	// Time axis.
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#6b7280"/>`+"\n", left, top+ph, left+pw, top+ph)
	b.WriteString(`<g fill="#374151" text-anchor="middle">`)
	ticks := 6
	for i := 0; i <= ticks; i++ {
		t := t0 + (t1-t0)*float64(i)/float64(ticks)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#6b7280"/>`, x(t), top+ph, x(t), top+ph+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, x(t), top+ph+18, esc(c.timeLabel(t)))
	}
	b.WriteString("</g>\n")
	// Series, drawn in reverse so the first (the total) is on top.
	for i := len(c.Series) - 1; i >= 0; i-- {
		s := c.Series[i]
		if len(s.Values) != n || n == 0 {
			continue
		}
		width := 1.5
		if i == 0 {
			width = 2.5
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round" points="`, seriesColor(s, i), width)
		for j, v := range s.Values {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(c.Times[j]), y(v))
		}
		b.WriteString(`"><title>`)
		b.WriteString(esc(s.Name))
		b.WriteString("</title></polyline>\n")
	}
	// The limit.
	if c.Limit > 0 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n",
			left, y(c.Limit), left+pw, y(c.Limit))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#dc2626" text-anchor="end">%s</text>`+"\n", left+pw-4, y(c.Limit)-5, esc(c.LimitLabel))
	}
	// Legend.
	lx := float64(o.Width - right + 16)
	ly := float64(top + 4)
	for i, s := range c.Series {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/><text x="%.1f" y="%.1f" fill="#111827">%s</text>`+"\n",
			lx, ly, lx+18, ly, seriesColor(s, i), lx+24, ly+4, esc(s.Name))
		ly += 18
	}
	if c.Limit > 0 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="6 4"/><text x="%.1f" y="%.1f" fill="#111827">%s</text>`+"\n",
			lx, ly, lx+18, ly, lx+24, ly+4, esc(firstWord(c.LimitLabel, "limit")))
		ly += 18
	}
	if len(c.Marks) == n {
		hit := false
		for _, m := range c.Marks {
			hit = hit || m
		}
		if hit {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="18" height="10" fill="#fecaca"/><text x="%.1f" y="%.1f" fill="#111827">%s</text>`+"\n",
				lx, ly-5, lx+24, ly+4, esc(c.MarkLabel))
		}
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func firstWord(s, def string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return def
}

func seriesColor(s Series, i int) string {
	if s.Color != "" {
		return s.Color
	}
	return palette[i%len(palette)]
}

// niceStep rounds x up to 1, 2 or 5 × a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}
