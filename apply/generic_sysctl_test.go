package apply_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

const portRangePath = "/proc/sys/net/ipv4/ip_local_port_range"

// The planner's step for a sysctl outside conntrack's own —
// local-ports-exhausted's wider port range, a value of two numbers the
// kernel prints with a tab — goes through apply like the others: checked
// against the namespace's value, written in the namespace only, read back
// and verified, journalled with the previous bytes, a second apply has
// nothing to do, rollback restores the exact bytes, and a plan whose value
// changed since is refused as stale. The test's own namespace never
// changes.
func TestGenericSysctlStep(t *testing.T) {
	ns := nstest.New(t, "sysctl")
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40999")
	before := ns.Run("cat", portRangePath)
	if before != "40000\t40999\n" {
		t.Fatalf("the namespace's range reads %q", before)
	}
	own, err := os.ReadFile(portRangePath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	snap, err := host.Read(ctx, host.Options{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	rep := &analyze.Report{Findings: []analyze.Finding{{ID: "local-ports-exhausted", Changes: []analyze.Change{{
		Kind: analyze.ChangeGenericSysctl, Key: "net.ipv4.ip_local_port_range", Value: "10000 65535", CurrentValue: "40000 40999",
		Current: -1, Proposed: -1, Scope: tune.ScopeNetNS, Reason: "more local ports"}}}}}
	p, err := tune.Build(rep, snap, tune.Options{Target: tune.Target{Root: "/", NetNS: ns.Name}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 1 || len(p.Steps[0].Actions) != 1 || p.Steps[0].Actions[0].Path != portRangePath {
		t.Fatalf("plan steps %+v, want one sysctl step", p.Steps)
	}
	if err := apply.Validate(p); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	opts := apply.Options{StateDir: state, Yes: true, Out: testWriter{t}, Watchdog: watchdogOpts()}
	res, err := apply.Apply(ctx, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 1 || res.State != apply.StateApplied {
		t.Fatalf("result %+v, want 1 change, applied", res)
	}
	// read by other means than apply's: sysctl in the namespace
	if got := strings.Fields(ns.Run("sysctl", "-n", "net.ipv4.ip_local_port_range")); strings.Join(got, " ") != "10000 65535" {
		t.Errorf("the namespace's range after apply: %q", got)
	}
	if now, _ := os.ReadFile(portRangePath); string(now) != string(own) {
		t.Errorf("the test's own namespace changed: %q → %q", own, now)
	}
	j := journalOf(t, state, res.ID)
	if len(j.Actions) != 1 || j.Actions[0].Prev == nil || j.Actions[0].Prev.Value != before || j.Actions[0].Status != apply.ActDone {
		t.Errorf("journal %+v, want the previous bytes %q", j.Actions, before)
	}
	again, err := apply.Apply(ctx, p, opts)
	if err != nil || !again.NothingToDo {
		t.Errorf("second apply %+v %v, want nothing to do", again, err)
	}
	rb, err := apply.Rollback(ctx, "", opts)
	if err != nil || rb.State != apply.StateRolledBack || rb.Changed != 1 {
		t.Fatalf("rollback %+v %v", rb, err)
	}
	if got := ns.Run("cat", portRangePath); got != before {
		t.Errorf("after rollback the range reads %q, want %q exactly", got, before)
	}
	// Stale: the value changed since the plan was made.
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=30000 30999")
	if _, err := apply.Apply(ctx, p, opts); !errors.Is(err, apply.ErrStale) || !strings.Contains(err.Error(), "30000 30999") {
		t.Errorf("stale plan: %v", err)
	}
	if got := strings.Fields(ns.Run("cat", portRangePath)); strings.Join(got, " ") != "30000 30999" {
		t.Errorf("a refused plan changed the range: %q", got)
	}
	if now, _ := os.ReadFile(portRangePath); string(now) != string(own) {
		t.Errorf("the test's own namespace changed: %q → %q", own, now)
	}
}
