package tune

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

// portRangeChange is local-ports-exhausted's change: the client's local
// port range, each network namespace's own.
func portRangeChange(current string) analyze.Change {
	return analyze.Change{Kind: analyze.ChangeGenericSysctl, Key: "net.ipv4.ip_local_port_range", Value: "10000 65535",
		CurrentValue: current, Current: -1, Proposed: -1, Scope: ScopeNetNS, Reason: "more local ports"}
}

func portsReport(changes ...analyze.Change) *analyze.Report {
	return &analyze.Report{Findings: []analyze.Finding{{ID: "local-ports-exhausted", Changes: changes}}}
}

// In a namespace: the sysctl is set there (ip netns exec), with the
// value quoted as one argument, read back by apply from the namespace's
// /proc/sys, and not persisted in the host's sysctl.d, which never
// reaches a namespace: the step says where it persists instead.
func TestGenericSysctlInNamespace(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n", "/sys/module/nf_conntrack/initstate": "live\n"})
	snap := &host.Snapshot{Hostname: "web1", NetNS: host.NetNS{Name: "demo"}}
	p, err := Build(portsReport(portRangeChange("32768\t60999")), snap, Options{Target: Target{Root: root, NetNS: "demo"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 1 || len(p.GlobalSteps) != 0 || len(p.Skipped) != 0 {
		t.Fatalf("steps %q, global %q, skipped %+v: want the one sysctl", titles(p.Steps), titles(p.GlobalSteps), p.Skipped)
	}
	st := p.Steps[0]
	want := Step{Finding: "local-ports-exhausted", Title: "set net.ipv4.ip_local_port_range to 10000 65535 (now 32768 60999)",
		Reason: "more local ports", Scope: ScopeNetNS, Key: "net.ipv4.ip_local_port_range", Current: "32768 60999", Proposed: "10000 65535",
		Persist:  NetNSNotPersisted,
		Commands: []string{`ip netns exec demo sysctl -w net.ipv4.ip_local_port_range="10000 65535"`},
		Actions:  []Action{{Kind: KindSysctl, Path: "/proc/sys/net/ipv4/ip_local_port_range", Expect: "32768\t60999", Value: "10000 65535"}}}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("step\n %+v\nwant\n %+v", st, want)
	}
	// Already at the value (the kernel prints it with a tab): nothing to do.
	p, err = Build(portsReport(portRangeChange("10000\t65535")), snap, Options{Target: Target{Root: root, NetNS: "demo"}})
	if err != nil || !p.Empty() {
		t.Errorf("at the value already: %v %q", err, titles(p.Steps))
	}
}

// In the initial namespace: set and persisted in sysctl.d with the
// conntrack keys, in one file; no modules-load.d entry for a key that is
// not the module's.
func TestGenericSysctlInit(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n", "/sys/module/nf_conntrack/initstate": "live\n"})
	snap := &host.Snapshot{Hostname: "web1", NetNS: host.NetNS{Init: true}}
	tg := Target{Root: root, Init: true}
	p, err := Build(portsReport(portRangeChange("32768 60999")), snap, Options{Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	st := findStep(p.Steps, "net.ipv4.ip_local_port_range")
	if st == nil || st.Commands[0] != `sysctl -w net.ipv4.ip_local_port_range="10000 65535"` || st.Persist != sysctlDFile {
		t.Fatalf("live step %+v (all: %q)", st, titles(p.Steps))
	}
	file := findStep(p.Steps, sysctlDFile)
	if file == nil || !strings.HasSuffix(file.Actions[0].Value, "\nnet.ipv4.ip_local_port_range = 10000 65535\n") {
		t.Fatalf("sysctl.d step %+v", file)
	}
	if findStep(p.Steps, modulesLoadFile) != nil {
		t.Errorf("a modules-load.d step for a key that is not nf_conntrack's: %q", titles(p.Steps))
	}
	// With a conntrack timeout beside it: one file for both, and the module
	// loaded early for the timeout's sake.
	rep := portsReport(portRangeChange("32768 60999"))
	rep.Findings = append(rep.Findings, analyze.Finding{ID: "timewait-dominant", Changes: []analyze.Change{
		{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_time_wait", Key: "net.netfilter.nf_conntrack_tcp_timeout_time_wait", Current: 120, Proposed: 30, Scope: ScopeNetNS}}})
	p, err = Build(rep, snap, Options{Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	file = findStep(p.Steps, sysctlDFile)
	if file == nil || !strings.Contains(file.Actions[0].Value, "net.ipv4.ip_local_port_range = 10000 65535\n") ||
		!strings.Contains(file.Actions[0].Value, "net.netfilter.nf_conntrack_tcp_timeout_time_wait = 30\n") {
		t.Fatalf("sysctl.d step %+v", file)
	}
	if findStep(p.Steps, modulesLoadFile) == nil {
		t.Errorf("no modules-load.d step for the conntrack key: %q", titles(p.Steps))
	}
}

// A global key is written from the initial namespace: a namespace's plan
// lists it apart. Changes the planner cannot make safely are skipped with
// the reason, and tuned owning the key is respected as for conntrack's.
func TestGenericSysctlScopesAndRefusals(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n"})
	snap := &host.Snapshot{Hostname: "web1", NetNS: host.NetNS{Name: "demo"}}
	g := analyze.Change{Kind: analyze.ChangeGenericSysctl, Key: "fs.nr_open", Value: "2097152", CurrentValue: "1048576", Scope: ScopeGlobal}
	p, err := Build(portsReport(g), snap, Options{Target: Target{Root: root, NetNS: "demo"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 0 || len(p.GlobalSteps) == 0 || p.GlobalSteps[0].Commands[0] != "sysctl -w fs.nr_open=2097152" {
		t.Errorf("global key in a namespace plan: steps %q, global %+v", titles(p.Steps), p.GlobalSteps)
	}

	bad := []analyze.Change{
		{Kind: analyze.ChangeGenericSysctl, Key: "kernel.pid_max", Value: "65536", Scope: ScopeNetNS},             // not namespaced
		{Kind: analyze.ChangeGenericSysctl, Key: "net/ipv4/../../x", Value: "1", Scope: ScopeNetNS},               // no sysctl name
		{Kind: analyze.ChangeGenericSysctl, Key: "net.ipv4.tcp_syncookies", Value: "1\nrm -rf /", Scope: "netns"}, // two lines
		{Kind: analyze.ChangeGenericSysctl, Key: "net.ipv4.tcp_fin_timeout", Value: "30", Scope: "host"},          // unknown scope
	}
	p, err = Build(portsReport(bad...), snap, Options{Target: Target{Root: root, NetNS: "demo"}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() || len(p.Skipped) != len(bad) {
		t.Fatalf("bad changes planned: %q, skipped %+v", titles(p.Steps), p.Skipped)
	}
	for i, want := range []string{"not a per-namespace setting", "not a sysctl name", "over several lines", `scope "host"`} {
		if !strings.Contains(p.Skipped[i].Reason, want) {
			t.Errorf("skipped %d: %q lacks %q", i, p.Skipped[i].Reason, want)
		}
	}

	// tuned writes the key last (reapply_sysctl off): left to tuned, in the
	// initial namespace; a namespace's own key is not tuned's.
	writeTree(t, root, map[string]string{"/etc/tuned/active_profile": "site\n", "/etc/tuned/tuned-main.conf": "reapply_sysctl = 0\n",
		"/etc/tuned/site/tuned.conf": "[sysctl]\nnet.ipv4.ip_local_port_range=20000 30000\n"})
	p, err = Build(portsReport(portRangeChange("32768 60999")), &host.Snapshot{NetNS: host.NetNS{Init: true}}, Options{Target: Target{Root: root, Init: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Skipped) != 1 || !strings.Contains(p.Skipped[0].Reason, "tuned owns it") ||
		!strings.Contains(p.Skipped[0].Reason, "set net.ipv4.ip_local_port_range=10000 65535 in [sysctl] of /etc/tuned/site/tuned.conf") {
		t.Errorf("tuned's key: steps %q, skipped %+v", titles(p.Steps), p.Skipped)
	}
	p, err = Build(portsReport(portRangeChange("32768 60999")), snap, Options{Target: Target{Root: root, NetNS: "demo"}})
	if err != nil || findStep(p.Steps, "net.ipv4.ip_local_port_range") == nil {
		t.Errorf("a namespace's own key is not tuned's: %v %q %+v", err, titles(p.Steps), p.Skipped)
	}
}

// sysctl -w gets name=value as one argument, whatever the value holds:
// the shell (bash here) hands over exactly that.
func TestSysctlArg(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, tc := range []struct{ name, val, want string }{
		{"net.netfilter.nf_conntrack_max", "262144", "net.netfilter.nf_conntrack_max=262144"},
		{"net.ipv4.ip_local_port_range", "10000 65535", `net.ipv4.ip_local_port_range="10000 65535"`},
		{"net.ipv4.ip_local_port_range", "10000\t65535", "net.ipv4.ip_local_port_range=\"10000\t65535\""},
		{"net.core.x", "a'b $HOME `id`", `'net.core.x=a'\''b $HOME ` + "`id`'"},
	} {
		got := sysctlArg(tc.name, tc.val)
		if got != tc.want {
			t.Errorf("sysctlArg(%q, %q) = %s, want %s", tc.name, tc.val, got, tc.want)
		}
		out, err := exec.Command(sh, "-c", `printf '%s|' `+got).Output()
		if err != nil || string(out) != tc.name+"="+tc.val+"|" {
			t.Errorf("%s: the shell passes %q (%v), want one argument %q", got, out, err, tc.name+"="+tc.val)
		}
	}
}
