package doctor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/ruleset"
	"github.com/ctdoctor/ctdoctor/tune"
)

// PlanOptions shape the plan Plan makes (and the fixes Diagnose prints).
type PlanOptions struct {
	// Global includes the host-wide steps in a plan for a namespace other
	// than the initial one.
	Global bool
	// Force plans a table size even when a full table would take more than
	// tune.DefaultMaxMemoryShare of RAM.
	Force bool
}

// Plan turns a diagnosis into a plan for the host it was made of. On the
// live host the NOTRACK steps are placed in the namespace's real ruleset
// (read over netlink, which needs CAP_NET_ADMIN); elsewhere they are left
// out, as skipped, since no rule can be placed safely without the ruleset.
func Plan(ctx context.Context, in Input, res *Result, opt PlanOptions) (*tune.Plan, error) {
	if res == nil || res.Snapshot == nil {
		return nil, fmt.Errorf("%w: no host to plan for (connection tracking is not active)", ErrInput)
	}
	kind, err := in.kind()
	if err != nil {
		return nil, err
	}
	snap := res.Snapshot
	t := tune.Target{Root: "/", NetNS: in.NetNS, Init: snap.NetNS.Init || in.NetNS == ""}
	var notrack tune.NotrackPlanner
	switch kind {
	case "live":
		if needsRuleset(res.Report) {
			rt := ruleset.Target{NetNS: in.NetNS}
			rs, err := ruleset.Read(ctx, rt)
			if err != nil {
				res.Report.Warnings = append(res.Report.Warnings, fmt.Sprintf("firewall ruleset: %v — NOTRACK fixes left out", err))
			} else {
				notrack = tune.Firewall{Ruleset: rs, Target: rt}
			}
		}
	case "Root":
		t.Root = in.Root
	case "Snapshot":
		// The archive holds no /etc: plan as for a host with no files there.
		t.Root = "/nonexistent"
		// A snapshot of a namespace (ctdoctor snapshot --netns NAME) is
		// planned for that namespace, reached by the name it had; an
		// archive that does not say which namespace it holds, as the host's.
		if n := snap.NetNS; n.Name != "" && !n.Init {
			t.NetNS, t.Init = n.Name, false
		}
		t.Module = tune.ModuleState{Name: moduleName(snap), Loaded: true}
	default: // a listing, a simulated host: nothing but the table is known
		dir, err := os.MkdirTemp("", "ctdoctor-plan-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		t.Root, t.Init = dir, true
		t.Module = tune.ModuleState{Name: moduleName(snap), Loaded: true}
	}
	return tune.Build(res.Report, snap, tune.Options{Target: t, Global: opt.Global, Force: opt.Force, Notrack: notrack})
}

func moduleName(s *host.Snapshot) string {
	if s.Settings.Legacy {
		return "ip_conntrack"
	}
	return "nf_conntrack"
}

func needsRuleset(r *analyze.Report) bool {
	for _, f := range r.Findings {
		for _, c := range f.Changes {
			if c.Kind == analyze.ChangeNotrack {
				return true
			}
		}
	}
	return false
}

// applyPlanFixes puts into the fixes of every finding that carries changes
// the lines of the plan's steps that make them, so that every command the
// report prints is exactly one `ctdoctor plan` would run: for the kernel
// and the firewall actually present, with the namespace prefix, the global
// part marked as such. Analyze writes the fixes as prose only (comment
// lines); the plan's lines go in where the finding says (ChangesAt). Two
// findings that propose the same change print the same commands. A step
// that sets a namespace's own sysctl is followed by where such a setting
// persists (not in the host's sysctl.d, which never reaches a namespace).
func applyPlanFixes(r *analyze.Report, p *tune.Plan) {
	steps := append(slices.Clone(p.Steps), p.GlobalSteps...)
	for i := range r.Findings {
		f := &r.Findings[i]
		if len(f.Changes) == 0 {
			continue
		}
		var lines []string
		for k, s := range steps {
			if !stepMakes(s, f) {
				continue
			}
			if k >= len(p.Steps) {
				lines = append(lines, "# on the host itself (a global setting, read-only in this namespace): "+s.Title)
			} else {
				lines = append(lines, "# "+s.Title)
			}
			lines = append(lines, s.Commands...)
			if s.Persist == tune.NetNSNotPersisted {
				lines = append(lines, "# "+s.Key+" is this namespace's own: it persists wherever the namespace is made "+
					"(docker run --sysctl, a pod's securityContext.sysctls, the script that runs ip netns add), not in the host's /etc/sysctl.d")
			}
		}
		for _, s := range p.Skipped {
			if s.Finding == f.ID {
				lines = append(lines, "# not planned — "+s.What+": "+s.Reason)
			}
		}
		at := min(max(f.ChangesAt, 0), len(f.Fixes))
		out := slices.Concat(f.Fixes[:at], lines, f.Fixes[at:])
		if len(out) == 0 {
			out = []string{"# nothing to change: the settings are already at the proposed values"}
		}
		f.Fixes = out
	}
}

// stepMakes reports whether a plan step carries out (or persists) one of
// the finding's changes.
func stepMakes(s tune.Step, f *analyze.Finding) bool {
	if s.Finding == f.ID {
		return true
	}
	for _, c := range f.Changes {
		switch {
		case c.Kind == analyze.ChangeNotrack:
			if s.Notrack != nil && c.Match != nil && *s.Notrack == *c.Match {
				return true
			}
		case c.Key == "":
		case s.Key == c.Key:
			return true
		default:
			// a persistence file that holds the key
			for _, a := range s.Actions {
				if a.Kind == tune.KindFile && (strings.Contains(a.Value, c.Key+" =") ||
					strings.HasSuffix(c.Key, "/hashsize") && strings.Contains(a.Value, " hashsize=")) {
					return true
				}
			}
		}
	}
	return false
}
