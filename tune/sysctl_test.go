package tune

import (
	"slices"
	"strings"
	"testing"
)

func titles(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Title)
	}
	return out
}

func findStep(steps []Step, key string) *Step {
	for i := range steps {
		if steps[i].Key == key {
			return &steps[i]
		}
	}
	return nil
}

// A modern host with a loadable module, planned from the initial namespace:
// live sysctls, one sysctl.d file, the module loaded early, the hash size
// live and in modprobe.d.
func TestSettingStepsModernInit(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/sys/module/nf_conntrack/initstate":           "live\n",
		"/sys/module/nf_conntrack/parameters/hashsize": "65536\n",
		"/etc/sysctl.d/99-sysctl.conf":                 "->../sysctl.conf",
		"/etc/sysctl.conf":                             "# vendor\n",
	})
	tg := Target{Root: root, Init: true, Module: ReadModuleState(root, "nf_conntrack")}
	steps, skipped, err := settingSteps(tg, []Setting{
		{Name: "tcp_timeout_time_wait", Current: 120, Proposed: 30, Finding: "timewait-dominant"},
		{Name: "max", Current: 65536, Proposed: 262144, Finding: "table-full"},
		{Name: "hashsize", Current: 65536, Proposed: 262144, Finding: "table-full"},
		{Name: "udp_timeout", Current: 30, Proposed: 30}, // unchanged: no step
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped: %+v", skipped)
	}
	tw := findStep(steps, "net.netfilter.nf_conntrack_tcp_timeout_time_wait")
	if tw == nil || tw.Commands[0] != "sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30" ||
		tw.Actions[0].Path != "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait" || tw.Actions[0].Expect != "120" ||
		tw.Persist != sysctlDFile {
		t.Fatalf("time_wait step: %+v", tw)
	}
	mx := findStep(steps, "net.netfilter.nf_conntrack_max")
	if mx == nil || mx.Scope != ScopeGlobal {
		t.Fatalf("max step: %+v", mx)
	}
	file := findStep(steps, sysctlDFile)
	if file == nil || !file.Actions[0].ExpectAbsent ||
		!strings.Contains(file.Actions[0].Value, "net.netfilter.nf_conntrack_tcp_timeout_time_wait = 30\n") ||
		!strings.Contains(file.Actions[0].Value, "net.netfilter.nf_conntrack_max = 262144\n") {
		t.Fatalf("sysctl.d step: %+v", file)
	}
	if findStep(steps, modulesLoadFile) == nil {
		t.Errorf("no modules-load.d step for a loadable module: %q", titles(steps))
	}
	hs := findStep(steps, "/sys/module/nf_conntrack/parameters/hashsize")
	if hs == nil || hs.Commands[0] != "echo 262144 > /sys/module/nf_conntrack/parameters/hashsize" || hs.Persist != modprobeFile {
		t.Fatalf("hashsize step: %+v", hs)
	}
	mp := findStep(steps, modprobeFile)
	if mp == nil || !strings.Contains(mp.Actions[0].Value, "options nf_conntrack hashsize=262144\n") {
		t.Fatalf("modprobe step: %+v", mp)
	}
}

// An operator's later file setting the same key: ours must sort after it,
// and the plan says what it overrides.
func TestSettingStepsLaterFileWins(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/etc/sysctl.d/99-custom.conf":                 "net.netfilter.nf_conntrack_tcp_timeout_time_wait = 60\n",
		"/sys/module/nf_conntrack/parameters/hashsize": "262144\n",
		"/etc/modules-load.d/conntrack.conf":           "nf_conntrack\n",
	})
	tg := Target{Root: root, Init: true, Module: ReadModuleState(root, "nf_conntrack")}
	steps, _, err := settingSteps(tg, []Setting{{Name: "tcp_timeout_time_wait", Current: 60, Proposed: 30}})
	if err != nil {
		t.Fatal(err)
	}
	f := findStep(steps, sysctlDLateFile)
	if f == nil || !strings.Contains(f.Reason, "/etc/sysctl.d/99-custom.conf:1") {
		t.Fatalf("want %s overriding 99-custom.conf, got %q", sysctlDLateFile, titles(steps))
	}
	// the chosen file really is last among those setting the key
	writeTree(t, root, map[string]string{sysctlDLateFile: f.Actions[0].Value})
	lines, _ := SysctlAssignments(root, "net.netfilter.nf_conntrack_tcp_timeout_time_wait")
	if w := Winner(lines)["net.netfilter.nf_conntrack_tcp_timeout_time_wait"]; w.File != sysctlDLateFile || w.Value != "30" {
		t.Fatalf("winner at boot = %+v", w)
	}
	// built-in module (no initstate): no modules-load.d entry needed
	if findStep(steps, modulesLoadFile) != nil {
		t.Errorf("modules-load.d step for a built-in module")
	}
	// planning again once the file is there: nothing to do
	steps, _, err = settingSteps(tg, []Setting{{Name: "tcp_timeout_time_wait", Current: 60, Proposed: 30}})
	if err != nil {
		t.Fatal(err)
	}
	if findStep(steps, sysctlDLateFile) != nil {
		t.Errorf("file step again although the file already says so: %q", titles(steps))
	}
}

// A namespace other than the initial one: commands carry the namespace,
// global keys are written from the host, timeouts are not persisted in
// the host's sysctl.d (it would not apply to the namespace).
func TestSettingStepsNamespace(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "262144\n"})
	tg := Target{Root: root, NetNS: "demo", Module: ReadModuleState(root, "nf_conntrack")}
	steps, _, err := settingSteps(tg, []Setting{
		{Name: "tcp_timeout_time_wait", Current: 120, Proposed: 30},
		{Name: "max", Current: 262144, Proposed: 524288},
	})
	if err != nil {
		t.Fatal(err)
	}
	tw := findStep(steps, "net.netfilter.nf_conntrack_tcp_timeout_time_wait")
	if tw == nil || tw.Commands[0] != "ip netns exec demo sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30" ||
		tw.Scope != ScopeNetNS || !strings.HasPrefix(tw.Persist, "not persisted") {
		t.Fatalf("time_wait step: %+v", tw)
	}
	mx := findStep(steps, "net.netfilter.nf_conntrack_max")
	if mx == nil || mx.Commands[0] != "sysctl -w net.netfilter.nf_conntrack_max=524288" || mx.Scope != ScopeGlobal {
		t.Fatalf("max step: %+v", mx)
	}
	f := findStep(steps, sysctlDFile)
	if f == nil || strings.Contains(f.Actions[0].Value, "time_wait") {
		t.Fatalf("the host's sysctl.d must hold the global key only: %+v", f)
	}
	for _, p := range []struct{ ns, want string }{
		{"pid:42", "nsenter --net=/proc/42/ns/net -- "}, {"42", "nsenter --net=/proc/42/ns/net -- "}, {"/run/netns/web 1", "ip netns exec 'web 1' "}, {"/var/run/netns/x", "nsenter --net=/var/run/netns/x -- "},
		{"/run/netns/web1", "ip netns exec web1 "}, {"init", ""}, {"", ""}, {"a'b", `ip netns exec 'a'\''b' `},
	} {
		if got := (Target{NetNS: p.ns}).Prefix(); got != p.want {
			t.Errorf("Prefix(%q) = %q, want %q", p.ns, got, p.want)
		}
	}
}

// A CentOS 5 era host: ip_conntrack names, /etc/sysctl.conf edited in
// place (comments and other keys kept), modprobe.conf's option replaced.
func TestSettingStepsLegacy(t *testing.T) {
	root := t.TempDir()
	conf := "# Kernel sysctl configuration file\nnet.ipv4.ip_forward = 0\nnet.ipv4.ip_conntrack_max = 16640\n"
	writeTree(t, root, map[string]string{
		"/etc/sysctl.conf":                             conf,
		"/etc/modprobe.conf":                           "alias eth0 e1000\noptions ip_conntrack hashsize=2080\n",
		"/sys/module/ip_conntrack/initstate":           "live\n",
		"/sys/module/ip_conntrack/parameters/hashsize": "2080\n",
	})
	tg := Target{Root: root, Init: true, Legacy: true, Module: ReadModuleState(root, "ip_conntrack")}
	steps, _, err := settingSteps(tg, []Setting{
		{Name: "max", Current: 16640, Proposed: 65536},
		{Name: "tcp_timeout_established", Current: 432000, Proposed: 216000},
		{Name: "hashsize", Current: 2080, Proposed: 16384},
	})
	if err != nil {
		t.Fatal(err)
	}
	if findStep(steps, "net.ipv4.ip_conntrack_max") == nil || findStep(steps, "net.ipv4.netfilter.ip_conntrack_tcp_timeout_established") == nil {
		t.Fatalf("legacy names missing: %q", titles(steps))
	}
	sc := findStep(steps, SysctlConf)
	want := "# Kernel sysctl configuration file\nnet.ipv4.ip_forward = 0\nnet.ipv4.ip_conntrack_max = 65536\nnet.ipv4.netfilter.ip_conntrack_tcp_timeout_established = 216000\n"
	if sc == nil || sc.Actions[0].Value != want || sc.Actions[0].Expect != conf {
		t.Fatalf("sysctl.conf step: %+v", sc)
	}
	mp := findStep(steps, "/etc/modprobe.conf")
	if mp == nil || mp.Actions[0].Value != "alias eth0 e1000\noptions ip_conntrack hashsize=16384\n" {
		t.Fatalf("modprobe.conf step: %+v", mp)
	}
	if findStep(steps, modulesLoadFile) != nil {
		t.Errorf("modules-load.d on a legacy system")
	}
	if !slices.ContainsFunc(steps, func(s Step) bool { return s.Key == "/sys/module/ip_conntrack/parameters/hashsize" }) {
		t.Errorf("no live hashsize step: %q", titles(steps))
	}
}

// A built-in module persists its hash size on the kernel command line,
// which ctdoctor leaves to the operator (said in Skipped).
func TestSettingStepsBuiltInHashsize(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n"})
	tg := Target{Root: root, Init: true, Module: ReadModuleState(root, "nf_conntrack")}
	steps, skipped, err := settingSteps(tg, []Setting{{Name: "hashsize", Current: 65536, Proposed: 262144}})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || !strings.Contains(steps[0].Persist, "kernel command line nf_conntrack.hashsize=262144") {
		t.Fatalf("steps: %+v", steps)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0].Reason, "nf_conntrack.hashsize=262144") {
		t.Fatalf("skipped: %+v", skipped)
	}
}
