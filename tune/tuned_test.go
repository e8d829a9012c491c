package tune

import (
	"slices"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

// A packaged profile in the layout of tuned before 2.24 (/usr/lib/tuned/NAME)
// that sets the table size and the hash size, as container-host profiles do,
// on top of a parent profile that sets a conntrack timeout.
var tunedTree = map[string]string{
	"/etc/tuned/active_profile": "container-host\n",
	"/usr/lib/tuned/container-host/tuned.conf": `#
# packaged profile
#
[main]
summary=For hosts running many containers
include=throughput-performance

[net]
nf_conntrack_hashsize=1048576

[sysctl]
kernel.pid_max=>4194304
net.netfilter.nf_conntrack_max=1048576   # inline comment
`,
	"/usr/lib/tuned/throughput-performance/tuned.conf": `[main]
summary=Broadly applicable tuning for throughput

[sysctl]
vm.dirty_ratio=40
net/netfilter/nf_conntrack_tcp_timeout_time_wait=60
`,
}

func TestReadTuned(t *testing.T) {
	root := t.TempDir()
	if tu, err := ReadTuned(root); err != nil || tu != nil {
		t.Fatalf("no tuned: %+v %v, want nil", tu, err)
	}
	writeTree(t, root, tunedTree)
	tu, err := ReadTuned(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tu.Active, []string{"container-host"}) || !tu.Reapply {
		t.Errorf("active %q, reapply %v", tu.Active, tu.Reapply)
	}
	if want := []string{"/usr/lib/tuned/container-host/tuned.conf", "/usr/lib/tuned/throughput-performance/tuned.conf"}; !slices.Equal(tu.Files, want) {
		t.Errorf("files %q, want %q", tu.Files, want)
	}
	if h := tu.Hashsize; h == nil || h.Value != "1048576" || h.Unit != "net" || h.Profile != "container-host" {
		t.Errorf("hashsize %+v", h)
	}
	if s := tu.Sysctl["net.netfilter.nf_conntrack_max"]; s.Value != "1048576" || s.File != "/usr/lib/tuned/container-host/tuned.conf" {
		t.Errorf("max %+v", s)
	}
	if s := tu.Sysctl["net.netfilter.nf_conntrack_tcp_timeout_time_wait"]; s.Value != "60" || s.Profile != "throughput-performance" {
		t.Errorf("time_wait (slash spelling, from the parent) %+v", s)
	}

	// The operator's profile of the same name under /etc/tuned includes the
	// packaged one and overrides its max; tuned-main.conf turns the
	// re-applying of sysctl.d off; tuned 2.24's layout is found too.
	writeTree(t, root, map[string]string{
		"/etc/tuned/container-host/tuned.conf": "[main]\ninclude=container-host\n[sysctl]\nnet.netfilter.nf_conntrack_max=2097152\n",
		"/etc/tuned/tuned-main.conf":           "daemon = 1\n# comment\nreapply_sysctl = 0\n",
	})
	tu, err = ReadTuned(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/etc/tuned/container-host/tuned.conf", "/usr/lib/tuned/container-host/tuned.conf", "/usr/lib/tuned/throughput-performance/tuned.conf"}; !slices.Equal(tu.Files, want) {
		t.Errorf("files %q, want %q", tu.Files, want)
	}
	if s := tu.Sysctl["net.netfilter.nf_conntrack_max"]; s.Value != "2097152" || s.File != "/etc/tuned/container-host/tuned.conf" {
		t.Errorf("max from the operator's profile: %+v", s)
	}
	if tu.Reapply {
		t.Errorf("reapply_sysctl = 0 read as on")
	}
}

func TestReadTunedUnresolved(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/etc/tuned/active_profile":                   "gone mine\n",
		"/etc/tuned/profiles/mine/tuned.conf":         "[main]\ninclude=${f:virt_check:virtual-guest:base},-optional-missing\n[net]\nenabled=false\nnf_conntrack_hashsize=4096\n[ct]\ntype=sysctl\nnet.netfilter.nf_conntrack_udp_timeout=10\n",
		"/usr/lib/tuned/profiles/base/tuned.conf":     "[sysctl]\nnet.netfilter.nf_conntrack_max=65536\n",
		"/usr/lib/tuned/profiles/unused/tuned.conf":   "[sysctl]\nnet.netfilter.nf_conntrack_max=1\n",
		"/usr/lib/tuned/profiles/optional/tuned.conf": "[sysctl]\nnet.netfilter.nf_conntrack_max=2\n",
	})
	tu, err := ReadTuned(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tu.Unresolved, []string{"gone", "${f:virt_check:virtual-guest:base}"}) {
		t.Errorf("unresolved %q", tu.Unresolved)
	}
	if tu.Hashsize != nil {
		t.Errorf("a disabled [net] unit sets the hash size: %+v", tu.Hashsize)
	}
	if s, ok := tu.Sysctl["net.netfilter.nf_conntrack_udp_timeout"]; !ok || s.Unit != "ct" || s.File != "/etc/tuned/profiles/mine/tuned.conf" {
		t.Errorf("a unit of type sysctl under another name: %+v", tu.Sysctl)
	}
	if _, ok := tu.Sysctl["net.netfilter.nf_conntrack_max"]; ok {
		t.Errorf("max from a profile that is not included: %+v", tu.Sysctl)
	}
}

func TestParseTunedConf(t *testing.T) {
	secs := ParseTunedConf([]byte("top=1\n[sysctl]\n; comment\nnet.a = 1 # note\nnet.b=x#y\nnet.c=first\n  second\n\n[net]\nno value line\n[sysctl]\nnet.a=2\n"))
	if len(secs) != 3 || secs[0].Name != "" || secs[1].Name != "sysctl" || secs[2].Name != "net" {
		t.Fatalf("sections %+v", secs)
	}
	got := map[string]string{}
	for _, o := range secs[1].Options {
		got[o.Key] = o.Value
	}
	if v, _ := secs[1].get("net.a"); v != "2" || got["net.b"] != "x#y" || got["net.c"] != "first\nsecond" || len(secs[2].Options) != 0 {
		t.Errorf("options %+v / %+v", secs[1].Options, secs[2].Options)
	}
}

// The plan leaves to tuned what tuned writes after ctdoctor (the hash
// size always; a sysctl when tuned does not put sysctl.d back, or leaves
// that key out) and says which file to edit; a sysctl tuned does put back
// is planned with a note. A namespace's own timeouts are not tuned's.
func TestBuildTuned(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, tunedTree)
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n", "/sys/module/nf_conntrack/initstate": "live\n"})
	snap := &host.Snapshot{MemBytes: 64 << 30, NetNS: host.NetNS{Init: true}}
	rep := testReport(
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "max", Current: 65536, Proposed: 262144, CostBytes: 80 << 20},
			{Kind: analyze.ChangeModuleParam, Setting: "hashsize", Current: 65536, Proposed: 262144}},
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_time_wait", Current: 120, Proposed: 30}},
	)
	plan := func(tg Target) (*Plan, map[string]string) {
		t.Helper()
		p, err := Build(rep, snap, Options{Target: tg})
		if err != nil {
			t.Fatal(err)
		}
		sk := map[string]string{}
		for _, s := range p.Skipped {
			sk[s.What] = s.Reason
		}
		return p, sk
	}

	p, sk := plan(Target{Root: root, Init: true})
	hs := sk["set hashsize to 262144"]
	for _, want := range []string{"tuned owns it", "nf_conntrack_hashsize=1048576 in /usr/lib/tuned/container-host/tuned.conf ([net])",
		"create /etc/tuned/container-host/tuned.conf with [main] include=container-host and [net] nf_conntrack_hashsize=262144", "tuned-adm profile container-host"} {
		if !strings.Contains(hs, want) {
			t.Errorf("hash size: %q lacks %q", hs, want)
		}
	}
	if findStep(append(p.Steps, p.GlobalSteps...), "/sys/module/nf_conntrack/parameters/hashsize") != nil {
		t.Errorf("the hash size is planned although tuned writes it: %q", titles(p.Steps))
	}
	// reapply_sysctl is on by default: max and time_wait are planned, and
	// their steps say tuned sets them too.
	for _, key := range []string{"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_time_wait"} {
		st := findStep(p.Steps, key)
		if st == nil {
			t.Fatalf("%s not planned: %q (skipped %v)", key, titles(p.Steps), sk)
		}
		if !strings.Contains(st.Reason, "tuned profile") || !strings.Contains(st.Reason, "the value persisted here wins") {
			t.Errorf("%s: reason %q does not mention tuned", key, st.Reason)
		}
	}

	// tuned leaves the conntrack keys out when it puts sysctl.d back.
	writeTree(t, root, map[string]string{"/etc/tuned/tuned-main.conf": "reapply_sysctl = 1\nreapply_sysctl_exclude = net.ipv4.ip_forward; net.netfilter.nf_conntrack_*\n"})
	p, sk = plan(Target{Root: root, Init: true})
	mx := sk["set max to 262144"]
	for _, want := range []string{"tuned owns it", "net.netfilter.nf_conntrack_max is in reapply_sysctl_exclude", "[sysctl] net.netfilter.nf_conntrack_max=262144"} {
		if !strings.Contains(mx, want) {
			t.Errorf("max: %q lacks %q", mx, want)
		}
	}
	if findStep(p.Steps, "net.netfilter.nf_conntrack_max") != nil || findStep(p.Steps, "net.netfilter.nf_conntrack_tcp_timeout_time_wait") != nil {
		t.Errorf("keys tuned writes last are planned: %q", titles(p.Steps))
	}

	// In a namespace, time_wait is the namespace's own: planned, no note.
	p, sk = plan(Target{Root: root, NetNS: "web1"})
	if st := findStep(p.Steps, "net.netfilter.nf_conntrack_tcp_timeout_time_wait"); st == nil || strings.Contains(st.Reason, "tuned") {
		t.Errorf("namespace time_wait: %+v", st)
	}
	if _, ok := sk["set max to 262144"]; !ok {
		t.Errorf("max is global, tuned's in a namespace plan too: %v", sk)
	}

	// The operator's own profile: edit it in place.
	writeTree(t, root, map[string]string{"/etc/tuned/tuned-main.conf": "reapply_sysctl = no\n",
		"/etc/tuned/active_profile": "site\n", "/etc/tuned/site/tuned.conf": "[sysctl]\nnet.netfilter.nf_conntrack_max=131072\n"})
	_, sk = plan(Target{Root: root, Init: true})
	if r := sk["set max to 262144"]; !strings.Contains(r, "reapply_sysctl is off") || !strings.Contains(r, "set net.netfilter.nf_conntrack_max=262144 in [sysctl] of /etc/tuned/site/tuned.conf") {
		t.Errorf("max with the operator's profile: %q", r)
	}
	if _, ok := sk["set hashsize to 262144"]; ok {
		t.Errorf("site sets no hash size: %v", sk)
	}
}

func FuzzParseTunedConf(f *testing.F) {
	for _, s := range tunedTree {
		f.Add(s)
	}
	f.Add("[a]\n  cont\nk=v\n\tmore # c\n[b\n=x\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, sec := range ParseTunedConf([]byte(s)) {
			for _, o := range sec.Options {
				if o.Key == "" || strings.ContainsAny(o.Key, "\n=") || o.Line <= 0 {
					t.Fatalf("bad option %+v from %q", o, s)
				}
			}
		}
	})
}
