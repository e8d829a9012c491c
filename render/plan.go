package render

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/tune"
)

// PlanJSON writes a plan as indented JSON (schema ctdoctor.plan/v1), the
// form `ctdoctor apply` takes.
func PlanJSON(w io.Writer, p *tune.Plan) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(p)
}

// PlanText writes a plan for a person: each step with the finding that
// motivates it and its evidence, current → proposed, scope, how it
// persists, its memory cost and the exact commands; the global part apart
// when the plan does not include it; what was not planned and why; the
// simulated effect.
func PlanText(w io.Writer, p *tune.Plan, o TextOptions) error {
	if o.Width <= 0 {
		o.Width = DefaultWidth
	}
	t := &textWriter{p: painter{o.Color}, width: max(o.Width, MinWidth)}
	pt := t.p
	ns := p.Host.NetNS
	if ns == "" {
		ns = "init"
	}
	t.tokens("", "", []string{pt.bold("ctdoctor plan"), "·", p.Host.Hostname, "·", "netns " + ns, "·", "plan " + p.ID}, " ")
	local, global := len(p.Steps), len(p.GlobalSteps)
	t.blank()
	switch {
	case p.Empty():
		t.para("", "", pt.sev(analyze.Healthy, "Nothing to do.")+" The findings propose no change that is not already in place.", plain)
	case p.Global:
		g := 0
		for _, s := range p.Steps {
			if s.Scope == tune.ScopeGlobal {
				g++
			}
		}
		t.para("", "", fmt.Sprintf("%d steps (%d for the whole host).", len(p.Steps), g), plain)
	case len(p.Steps) == 0:
		t.para("", "", fmt.Sprintf("Nothing to do in this namespace; %d steps for the whole host, listed apart: run them on the host itself, or plan with --global.", global), plain)
	default:
		t.para("", "", fmt.Sprintf("%d steps in this namespace; %d more for the whole host, listed apart: apply applies them only with --global, from the initial namespace.", local, global), plain)
	}
	n := 0
	shown := map[string]bool{} // findings whose evidence was shown
	step := func(s tune.Step) {
		n++
		t.blank()
		head := fmt.Sprintf("%d. ", n)
		title := words(s.Title, t.width-len(head))
		if s.Finding != "" {
			title = append(title, pt.dim("["+s.Finding+"]"))
		}
		t.tokens(pt.bold(head), indent(len(head)), title, " ")
		if s.Reason != "" {
			t.para("   why       ", indent(13), s.Reason, plain)
		}
		if len(s.Evidence) > 0 && !shown[s.Finding] {
			shown[s.Finding] = true
			sub := &textWriter{p: t.p, width: t.width}
			sub.evidence(s.Evidence)
			t.b.WriteString(strings.Replace(sub.b.String(), "    evidence  ", "   evidence  ", 1))
		}
		if oneLine(s.Current) && oneLine(s.Proposed) {
			t.para("   change    ", indent(13), s.Current+" → "+s.Proposed, plain)
		}
		scope := "this network namespace"
		if s.Scope == tune.ScopeGlobal {
			scope = "the whole host"
		}
		t.para("   scope     ", indent(13), scope, plain)
		if s.Persist != "" {
			t.para("   persists  ", indent(13), s.Persist, plain)
		}
		if s.CostBytes > 0 {
			t.para("   cost      ", indent(13), "up to "+analyze.HumanBytes(s.CostBytes)+" of kernel memory when the table is full", plain)
		}
		sub := &textWriter{p: t.p, width: t.width}
		sub.fixes(s.Commands)
		t.b.WriteString(strings.Replace(sub.b.String(), "    fix      ", "   run       ", 1))
	}
	for _, s := range p.Steps {
		step(s)
	}
	if global > 0 {
		t.blank()
		t.para("", "", pt.bold("For the whole host")+" (not applied with this plan: these settings are read-only inside a namespace; run the commands on the host itself, or plan with --global)", plain)
		for _, s := range p.GlobalSteps {
			step(s)
		}
	}
	if len(p.Skipped) > 0 {
		t.blank()
		t.line(pt.bold("Not planned"))
		for _, s := range p.Skipped {
			t.para("  - ", indent(4), s.What+" ["+s.Finding+"]: "+s.Reason, plain)
		}
	}
	if pr := p.Prediction; pr != nil {
		t.blank()
		t.para("", "", pt.bold("Predicted")+fmt.Sprintf(" (the workload derived from this table, simulated for %s with the current and the planned settings)", secondsWords(pr.Duration)), plain)
		t.line(fmt.Sprintf("  peak entries  %s of %s (%s)  →  %s of %s (%s)", num(pr.Before.PeakEntries), num(pr.Before.Max), pctStr(pr.Before.PeakUsage),
			num(pr.After.PeakEntries), num(pr.After.Max), pctStr(pr.After.PeakUsage)))
		t.line(fmt.Sprintf("  drops         %s  →  %s", num(int64(pr.Before.Drops)), num(int64(pr.After.Drops))))
		t.line(fmt.Sprintf("  early drops   %s  →  %s", num(int64(pr.Before.EarlyDrops)), num(int64(pr.After.EarlyDrops))))
	}
	_, err := io.WriteString(w, t.b.String())
	return err
}

func oneLine(s string) bool { return s != "" && !strings.Contains(s, "\n") && len(s) < 60 }

func secondsWords(s float64) string {
	switch {
	case s >= 3600 && int64(s)%3600 == 0:
		return fmt.Sprintf("%d h", int64(s)/3600)
	case s >= 60 && int64(s)%60 == 0:
		return fmt.Sprintf("%d min", int64(s)/60)
	}
	return fmt.Sprintf("%.0f s", s)
}

// PlanScript writes a plan as a POSIX shell script to review and run:
// each step's title and reason as comments, then its commands; set -eu
// stops at the first failure. Global steps are included only when the
// plan includes them (else listed as comments).
func PlanScript(w io.Writer, p *tune.Plan) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# ctdoctor plan %s for %s, network namespace %s, made %s.\n", p.ID, p.Host.Hostname, p.Host.NetNS, p.CreatedAt.Format("2006-01-02 15:04:05 MST"))
	b.WriteString("# Review it before running it. 'ctdoctor apply' makes the same changes with a journal,\n")
	b.WriteString("# verification and rollback; this script has none of that.\n")
	if p.Empty() {
		b.WriteString("# Nothing to do.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	b.WriteString("set -eu\n")
	for i, s := range append(slices.Clone(p.Steps), p.GlobalSteps...) {
		b.WriteString("\n")
		skip := i >= len(p.Steps)
		comment(&b, fmt.Sprintf("Step %d [%s]: %s", i+1, s.Finding, s.Title))
		if s.Reason != "" {
			comment(&b, "Why: "+s.Reason)
		}
		if skip {
			comment(&b, "Global: not run here (the plan was made without --global); on the host itself:")
		}
		for _, c := range s.Commands {
			if skip {
				for l := range strings.SplitSeq(c, "\n") {
					b.WriteString("#   " + l + "\n")
				}
				continue
			}
			if strings.Contains(c, "\n") {
				// An nft batch: its lines indented, long ones broken (as
				// in the report; nft reads the same batch).
				for _, l := range Command(c, scriptWidth, "", 2) {
					b.WriteString(l + "\n")
				}
				continue
			}
			b.WriteString(c + "\n")
		}
	}
	for _, s := range p.Skipped {
		b.WriteString("\n")
		comment(&b, "Not planned ["+s.Finding+"]: "+s.What+": "+s.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// scriptWidth is the width PlanScript lays out comments and nft batches
// for.
const scriptWidth = 98

// comment writes text as shell comment lines of about 100 columns.
func comment(b *strings.Builder, text string) {
	for _, l := range lay(words(text, scriptWidth-2), " ", scriptWidth-2, scriptWidth-4) {
		b.WriteString("# " + l + "\n")
	}
}
