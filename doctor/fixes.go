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

// applyPlanFixes rewrites the fixes of every finding that carries changes
// from the plan's steps that make them, so that what the report prints is
// exactly what `ctdoctor plan` would do: commands for the kernel and the
// firewall actually present, with the namespace prefix, the global part
// marked as such. Two findings that propose the same change print the same
// commands. Advice lines (comments, commands that are not changes) stay
// where they were; the change lines are replaced where the first of them
// stood.
func applyPlanFixes(r *analyze.Report, p *tune.Plan) {
	for i := range r.Findings {
		f := &r.Findings[i]
		if len(f.Changes) == 0 {
			continue
		}
		var lines []string
		for i, s := range append(slices.Clone(p.Steps), p.GlobalSteps...) {
			if !stepMakes(s, f) {
				continue
			}
			if i >= len(p.Steps) {
				lines = append(lines, "# on the host itself (a global setting, read-only in this namespace): "+s.Title)
			} else {
				lines = append(lines, "# "+s.Title)
			}
			lines = append(lines, s.Commands...)
		}
		for _, s := range p.Skipped {
			if s.Finding == f.ID {
				lines = append(lines, "# not planned — "+s.What+": "+s.Reason)
			}
		}
		var out []string
		placed := false
		for _, l := range f.Fixes {
			if isChangeLine(l) {
				if !placed {
					out = append(out, lines...)
					placed = true
				}
				continue
			}
			out = append(out, l)
		}
		if !placed {
			out = append(out, lines...)
		}
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

// inNamespace makes the advice lines the planner did not write (those of
// findings without changes, and the advice beside changes) run in the
// diagnosed namespace: a per-namespace sysctl (net.*) gets the prefix, and
// appending it to the host's sysctl.d — which never reaches a namespace —
// becomes a note on where such a setting persists.
func inNamespace(r *analyze.Report, prefix string) {
	if prefix == "" {
		return
	}
	for i := range r.Findings {
		f := r.Findings[i].Fixes
		for j, l := range f {
			switch {
			case strings.HasPrefix(l, "sysctl -w net."):
				f[j] = prefix + l
			case strings.HasPrefix(l, "echo 'net.") && strings.Contains(l, ">> /etc/sysctl"):
				key, _, _ := strings.Cut(strings.TrimPrefix(l, "echo '"), " ")
				f[j] = "# " + key + " is this namespace's own: it persists wherever the namespace is made " +
					"(docker run --sysctl, a pod's securityContext.sysctls, the script that runs ip netns add), not in the host's /etc/sysctl.d"
			}
		}
	}
}

// isChangeLine reports whether a fix line is one of the change commands
// analyze prints for a Change (sysctls, the hash size, NOTRACK rules and
// their headings), which the plan's commands replace.
func isChangeLine(l string) bool {
	l = strings.TrimSpace(l)
	for _, p := range []string{
		"sysctl -w net.netfilter.nf_conntrack_", "sysctl -w net.ipv4.ip_conntrack_", "sysctl -w net.ipv4.netfilter.ip_conntrack_",
		"echo 'net.netfilter.nf_conntrack_", "echo 'net.ipv4.ip_conntrack_", "echo 'net.ipv4.netfilter.ip_conntrack_",
		"nft ", "iptables ", "ip6tables ", "# nftables:", "# iptables:",
	} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return strings.HasPrefix(l, "echo ") && strings.Contains(l, "/parameters/hashsize")
}
