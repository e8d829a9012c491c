package render

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSparkline(t *testing.T) {
	if got := Sparkline([]float64{0, 1, 2, 3, 4, 5, 6, 7, 8}, 9, 8); got != " ▁▂▃▄▅▆▇█" {
		t.Errorf("Sparkline = %q", got)
	}
	// A one-sample spike among 1000 survives squeezing into 10 columns.
	v := make([]float64, 1000)
	v[503] = 100
	if got := Sparkline(v, 10, 0); strings.Count(got, "█") != 1 || strings.TrimSpace(got) != "█" {
		t.Errorf("spike lost: %q", got)
	}
}

func TestTerminalChartLimitAndMarks(t *testing.T) {
	n := 100
	c := Chart{Title: "t", Times: make([]float64, n), Limit: 50, LimitLabel: "max 50", Marks: make([]bool, n), MarkLabel: "drops"}
	total := make([]float64, n)
	for i := range n {
		c.Times[i] = float64(i)
		total[i] = min(float64(i), 50)
		c.Marks[i] = i >= 50
	}
	c.Series = []Series{{Name: "total", Values: total}, {Name: "part", Values: total}}
	var b bytes.Buffer
	if err := TerminalChart(&b, c, 80, 8); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"┄", "▲", "00:00:00", "00:01:39", "┄┄ max 50", "part "} {
		if !strings.Contains(out, want) {
			t.Errorf("chart lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if w := len([]rune(l)); w > 80 {
			t.Errorf("line of %d columns in an 80-column chart: %q", w, l)
		}
	}
	// The drops marks start half way: no ▲ in the first half of the line.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "drops") {
			r := []rune(l)
			i := strings.IndexRune(string(r), '▲')
			first := len([]rune(l[:i]))
			// 7 columns of label, then 73 of plot: half way is column 43.
			if first < 40 || first > 46 {
				t.Errorf("marks start at column %d of %q, want ~43", first, l)
			}
		}
	}
}

func TestSVGWellFormed(t *testing.T) {
	c := Chart{Title: `a <b> & "c"`, Times: []float64{0, 1, 2}, Limit: 3, LimitLabel: "max 3", Marks: []bool{false, true, true}, MarkLabel: "drops",
		Series: []Series{{Name: "total", Values: []float64{0, 2, 4}}, {Name: "x&y", Values: []float64{0, 1, 1}}}}
	var b bytes.Buffer
	if err := SVG(&b, c, SVGOptions{Subtitle: "<sub>"}); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	n := 0
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		n++
	}
	if n < 20 {
		t.Errorf("%d tokens", n)
	}
	if err := SVG(io.Discard, c, SVGOptions{Width: 100, Height: 50}); err == nil {
		t.Error("a 100×50 chart was accepted")
	}
}
