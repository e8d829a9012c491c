package ruleset

import (
	"fmt"
	"io"
	"strings"
)

// WriteScript writes the plan as a POSIX shell script to review and run:
// each step's what and why as comments, then its commands; set -e stops
// at the first failure. The undo commands follow as comments.
func WriteScript(w io.Writer, p *Plan) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# ctdoctor plan: stop tracking %s in %s.\n", p.Selector, p.Target)
	if p.Empty() {
		b.WriteString("# Nothing to do: the ruleset already untracks this traffic and accepts it.\n")
	} else {
		b.WriteString("# Review it, then run it with sh. It stops at the first command that fails.\n")
		b.WriteString("set -eu\n")
	}
	for _, n := range p.Notes {
		comment(&b, "Note: "+n)
	}
	for i, s := range p.Steps {
		b.WriteString("\n")
		comment(&b, fmt.Sprintf("Step %d (%s): %s", i+1, s.Kind, s.What))
		comment(&b, "Why: "+s.Why)
		for _, c := range s.Commands {
			b.WriteString(c + "\n")
		}
	}
	if u := p.UndoCommands(); len(u) > 0 {
		b.WriteString("\n")
		comment(&b, "To undo, run these commands in this order:")
		for _, c := range u {
			for line := range strings.SplitSeq(c, "\n") {
				b.WriteString("#   " + line + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteUndoScript writes the commands that undo the plan as a script.
func WriteUndoScript(w io.Writer, p *Plan) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# Undo the ctdoctor plan that stopped tracking %s in %s.\n", p.Selector, p.Target)
	b.WriteString("set -eu\n")
	for _, c := range p.UndoCommands() {
		b.WriteString(c + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Lines returns the plan as fix lines for a report: comment lines (what
// each step does, starting with "# ") and command lines, in order.
func (p *Plan) Lines() []string {
	if p.Empty() {
		return []string{fmt.Sprintf("# nothing to do: %s traffic is already untracked and accepted", p.Selector)}
	}
	var out []string
	for _, s := range p.Steps {
		out = append(out, "# "+s.What)
		out = append(out, s.Commands...)
	}
	return out
}

// comment writes text as shell comment lines wrapped at about 100 columns.
func comment(b *strings.Builder, text string) {
	line := "#"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 100 && line != "#" {
			b.WriteString(line + "\n")
			line = "#  "
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
}
