package apply

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctdoctor/ctdoctor/render"
)

// progressLine is one action's line in apply's and rollback's output: the
// step, its title and the action, wrapped at the output's width with a
// hanging indent, then the outcome once the action is done. The outcome
// stays on the action's last line when it fits.
type progressLine struct {
	out    io.Writer
	width  int
	indent string
	col    int // visible columns on the current line
}

// startProgressLine prints head ("step 1/3"), the title and "label:" and
// leaves the line open for the outcome.
func startProgressLine(out io.Writer, head, title, label string) *progressLine {
	p := &progressLine{out: out, width: render.Width(out)}
	p.indent = strings.Repeat(" ", 2+len(head)+2)
	lines := render.Wrap(title, p.width, "  "+head+"  ", p.indent)
	lines = append(lines, render.Wrap(label+":", p.width, p.indent, p.indent)...)
	fmt.Fprint(out, strings.Join(lines, "\n"))
	p.col = render.VisibleWidth(lines[len(lines)-1])
	return p
}

// finish ends the line with the outcome, wrapped under the action when it
// does not fit beside it.
func (p *progressLine) finish(outcome string) {
	if p.col+1+render.VisibleWidth(outcome) <= p.width {
		fmt.Fprintln(p.out, " "+outcome)
		return
	}
	fmt.Fprintln(p.out)
	for _, l := range render.Wrap(outcome, p.width, p.indent, p.indent) {
		fmt.Fprintln(p.out, l)
	}
}
