package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/tune"
)

// writePlanJSON writes v as JSON into dir/name (world-readable).
func writePlanJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyCommands runs apply, history and rollback as a user would, on
// a fake root (no privileges needed): the flags, the texts and the exit
// statuses.
func TestApplyCommands(t *testing.T) {
	// Piped output is laid out for $COLUMNS: every line of apply,
	// history and rollback must fit it.
	const width = 80
	t.Setenv("COLUMNS", strconv.Itoa(width))
	fits := func(what, out string) {
		t.Helper()
		for i, l := range strings.Split(out, "\n") {
			if w := render.VisibleWidth(l); w > width {
				t.Errorf("%s: line %d is %d columns, wider than COLUMNS=%d: %q", what, i+1, w, width, l)
			}
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for p, c := range map[string]string{
		"proc/sys/kernel/hostname":                                  "fakehost\n",
		"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait": "120\n",
		"etc/sysctl.d/50-other.conf":                                "vm.swappiness = 10\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plan := &tune.Plan{Schema: tune.PlanSchema, ID: "cli-plan", CreatedAt: time.Now().UTC(),
		Host: tune.PlanHost{Hostname: "fakehost", NetNS: "init", Root: root}, Global: true,
		Steps: []tune.Step{
			{Title: "shorten TIME_WAIT, the state closed connections wait in, from 120 s to 30 s", Scope: tune.ScopeNetNS, Commands: []string{"sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30"},
				Actions: []tune.Action{{Kind: tune.KindSysctl, Path: "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait", Expect: "120", Value: "30"}}},
			{Title: "persist", Scope: tune.ScopeGlobal,
				Actions: []tune.Action{{Kind: tune.KindFile, Path: "/etc/sysctl.d/90-ctdoctor.conf", ExpectAbsent: true, Value: "net.netfilter.nf_conntrack_tcp_timeout_time_wait = 30\n"}}},
		}}
	planFile := writePlanJSON(t, dir, "plan.json", plan)
	state := filepath.Join(dir, "state")
	run := func(args ...string) (string, string, int) {
		var out, errb strings.Builder
		code := Main(args, &out, &errb)
		return out.String(), errb.String(), code
	}
	base := []string{"apply", planFile, "--root", root, "--state-dir", state}

	out, errs, code := run(append(base, "--global", "--dry-run")...)
	if code != 0 || !strings.Contains(out, "nf_conntrack_tcp_timeout_time_wait   120 → 30") || !strings.Contains(out, "Nothing was changed (--dry-run).") {
		t.Fatalf("--dry-run: exit %d\n%s%s", code, out, errs)
	}
	if _, errs, code = run(base...); code != 1 || !strings.Contains(errs, "pass --global") {
		t.Errorf("without --global: exit %d, %s", code, errs)
	}
	if _, errs, code = run(append(base, "--global")...); code != 1 || !strings.Contains(errs, "not on a terminal") || !strings.Contains(errs, "--yes") {
		t.Errorf("no terminal, no --yes: exit %d, %s", code, errs)
	}
	out, errs, code = run(append(base, "--global", "--yes")...)
	if code != 0 || !strings.Contains(out, "Applied and verified: 2 changes") || !strings.Contains(out, "Undo with: ctdoctor rollback ") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	fits("apply", out)
	out, _, code = run(append(base, "--global", "--yes")...)
	if code != 0 || !strings.Contains(out, "Nothing to do: plan cli-plan is already applied") {
		t.Errorf("apply again: exit %d\n%s", code, out)
	}
	out, _, code = run("history", "--state-dir", state, "-o", "json")
	var h struct {
		Schema  string
		Applies []struct{ ID, State string }
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil || code != 0 || h.Schema != "ctdoctor.history/v1" || len(h.Applies) != 1 || h.Applies[0].State != "applied" {
		t.Fatalf("history -o json: exit %d, %v\n%s", code, err, out)
	}
	out, errs, code = run("rollback", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "is rolled back: 2 actions restored and verified") {
		t.Fatalf("rollback: exit %d\n%s%s", code, out, errs)
	}
	fits("rollback", out)
	if b, _ := os.ReadFile(filepath.Join(root, "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")); string(b) != "120\n" {
		t.Errorf("time_wait after rollback %q", b)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/sysctl.d/90-ctdoctor.conf")); err == nil {
		t.Error("the new file is still there after rollback")
	}
	out, _, code = run("rollback", "--state-dir", state, h.Applies[0].ID)
	if code != 0 || !strings.Contains(out, "Nothing to do") {
		t.Errorf("rollback again: exit %d\n%s", code, out)
	}
	out, _, _ = run("history", "--state-dir", state)
	if !strings.Contains(out, "rolled back") || !strings.Contains(out, "2 steps: shorten") {
		t.Errorf("history:\n%s", out)
	}
	fits("history", out)

	// bad input: exit 1 with the reason; bad flags: exit 2
	trunc := filepath.Join(dir, "trunc.json")
	b, _ := os.ReadFile(planFile)
	if err := os.WriteFile(trunc, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code = run("apply", trunc, "--state-dir", state, "--yes"); code != 1 || !strings.Contains(errs, "truncated") {
		t.Errorf("truncated plan: exit %d, %s", code, errs)
	}
	for _, args := range [][]string{
		{"apply", "--state-dir", state},
		{"apply", planFile, "--confirm-within", "10ms"},
		{"apply", planFile, "--confirm", "x"},
		{"history", "-o", "yaml"},
	} {
		if _, errs, code = run(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}

// TestApplyNotRoot: as an unprivileged user, apply to a namespace stops
// before anything changes with an error naming the capabilities.
func TestApplyNotRoot(t *testing.T) {
	ns := nstest.New(t)
	ns.Track()
	const tw = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait"
	cur := strings.TrimSpace(ns.Run("cat", tw))
	hostname, _ := os.ReadFile("/proc/sys/kernel/hostname")
	plan := &tune.Plan{Schema: tune.PlanSchema, ID: "nobody", CreatedAt: time.Now().UTC(),
		Host: tune.PlanHost{Hostname: strings.TrimSpace(string(hostname)), NetNS: ns.Name, NetNSInode: ns.Inode(), Root: "/"},
		Steps: []tune.Step{{Title: "shorten TIME_WAIT", Scope: tune.ScopeNetNS,
			Actions: []tune.Action{{Kind: tune.KindSysctl, Path: tw, Expect: cur, Value: "31"}}}}}
	dir := worldDir(t)
	planFile := writePlanJSON(t, dir, "plan.json", plan)
	state := filepath.Join(dir, "state")
	res := runAsNobody(t, "", dir, "apply", planFile, "--state-dir", state, "--yes")
	if res.code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "sudo", "nothing was changed"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("error lacks %q: %s", want, res.stderr)
		}
	}
	if got := strings.TrimSpace(ns.Run("cat", tw)); got != cur {
		t.Errorf("time_wait changed to %s", got)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("the state directory was created")
	}
	res = runAsNobody(t, "", dir, "rollback", "--state-dir", state)
	if res.code != 1 || !strings.Contains(res.stderr, "nothing to roll back") {
		t.Errorf("rollback as nobody: exit %d %s", res.code, res.stderr)
	}
}
