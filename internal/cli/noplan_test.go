package cli

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// --no-plan (hidden; the exporter's background run) gives the same
// diagnosis without planning: the same findings and changes, fixes with
// advice only and no command, where the plain run prints the plan's.
func TestNoPlanFlag(t *testing.T) {
	planned := report(t, "--root", fixtures+"pre515", "--interval", "0")
	bare := report(t, "--root", fixtures+"pre515", "--interval", "0", "--no-plan")
	if len(planned.Findings) == 0 || len(bare.Findings) != len(planned.Findings) {
		t.Fatalf("%d findings with --no-plan, %d without", len(bare.Findings), len(planned.Findings))
	}
	commands := 0
	for i, f := range bare.Findings {
		p := planned.Findings[i]
		if f.ID != p.ID || f.Severity != p.Severity || len(f.Changes) != len(p.Changes) {
			t.Errorf("finding %d: %s/%s with %d changes, planned %s/%s with %d", i, f.ID, f.Severity, len(f.Changes), p.ID, p.Severity, len(p.Changes))
		}
		for _, l := range f.Fixes {
			if !strings.HasPrefix(l, "# ") {
				t.Errorf("%s: a command with --no-plan: %q", f.ID, l)
			}
		}
		for _, l := range p.Fixes {
			if !strings.HasPrefix(l, "#") {
				commands++
			}
		}
	}
	if commands == 0 {
		t.Fatal("the planned report printed no command: the comparison shows nothing")
	}
}

// The exporter's background diagnosis, whose fixes no one sees, asks its
// child not to plan.
func TestExporterChildSkipsPlanning(t *testing.T) {
	old := diagnoseCommand
	t.Cleanup(func() { diagnoseCommand = old })
	var got []string
	diagnoseCommand = func(ctx context.Context, args []string) (*exec.Cmd, error) {
		got = args
		return exec.CommandContext(ctx, "true"), nil
	}
	_, _ = childDiagnose(context.Background(), "/run/netns/x", 10) // true prints no report: an error, not the point
	if !slices.Contains(got, "--no-plan") || !slices.Contains(got, "json") {
		t.Errorf("child args %q, want -o json with --no-plan", got)
	}
}
