package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

// Ownership: who else sets a conntrack setting decides what the plan may
// do with it. Each test is one kind of host; the plan must be right for it.

const fixtureHosts = "../../host/testdata/hosts/"

// copyFixture copies a fixture host into a temporary directory the test
// may change.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cp", "-a", fixtureHosts+name, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s: %v: %s", name, err, out)
	}
	return dst
}

// writeFiles writes files (host path → content) under root.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// allSteps are the steps of a plan and those it lists apart for the host.
func allSteps(p *tune.Plan) []tune.Step { return append(slices.Clone(p.Steps), p.GlobalSteps...) }

func stepByKey(p *tune.Plan, key string) *tune.Step {
	for _, s := range allSteps(p) {
		if s.Key == key {
			return &s
		}
	}
	return nil
}

func skippedByWhat(p *tune.Plan) map[string]string {
	m := map[string]string{}
	for _, s := range p.Skipped {
		m[s.What] = s.Reason
	}
	return m
}

// writePlanFiles writes every file action of the plan into root, as apply
// would (tests of the boot order read them back).
func writePlanFiles(t *testing.T, root string, p *tune.Plan) {
	t.Helper()
	for _, s := range allSteps(p) {
		for _, a := range s.Actions {
			if a.Kind == tune.KindFile {
				writeFiles(t, root, map[string]string{a.Path: a.Value})
			}
		}
	}
}

// A kube-proxy node: kube-proxy rewrites nf_conntrack_max, the hash size
// and the established and close_wait timeouts at every start, so none of
// them is planned as a sysctl or module parameter; each is listed as not
// planned, naming the KubeProxyConfiguration field that controls it.
func TestOwnershipKubeProxy(t *testing.T) {
	kubeKeys := []string{"net.netfilter.nf_conntrack_max", "/sys/module/nf_conntrack/parameters/hashsize",
		"net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_tcp_timeout_close_wait"}
	noKubeSteps := func(p *tune.Plan) {
		t.Helper()
		for _, k := range kubeKeys {
			if s := stepByKey(p, k); s != nil {
				t.Errorf("kube-proxy's %s is planned: %s", k, s.Title)
			}
		}
		for _, s := range allSteps(p) {
			for _, c := range s.Commands {
				if strings.Contains(c, "nf_conntrack_max") || strings.Contains(c, "hashsize") {
					t.Errorf("a command changes a kube-proxy setting: %s", c)
				}
			}
		}
	}

	// The fixture as it is: only the hash size is proposed (max/4 by kube-proxy).
	p := planJSON(t, "--root", fixtureHosts+"k8s-node", "--no-predict")
	noKubeSteps(p)
	if r := skippedByWhat(p)["set hashsize to 131072"]; !strings.Contains(r, "conntrack.maxPerCore") || !strings.Contains(r, "KubeProxyConfiguration") {
		t.Errorf("hash size on the kube-proxy node: %q", r)
	}

	// The same node with its table full and the established timeout at the
	// kernel's 5 days: max and established are proposed, and left to kube-proxy.
	root := copyFixture(t, "k8s-node")
	writeFiles(t, root, map[string]string{
		"/proc/sys/net/netfilter/nf_conntrack_max":                     "2048\n",
		"/proc/sys/net/nf_conntrack_max":                               "2048\n",
		"/proc/sys/net/netfilter/nf_conntrack_buckets":                 "1024\n",
		"/sys/module/nf_conntrack/parameters/hashsize":                 "1024\n",
		"/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established": "432000\n",
	})
	p = planJSON(t, "--root", root, "--no-predict")
	noKubeSteps(p)
	sk := skippedByWhat(p)
	for what, field := range map[string]string{
		"set max to 65536":                     "conntrack.maxPerCore (and conntrack.min)",
		"set hashsize to 65536":                "conntrack.maxPerCore",
		"set tcp_timeout_established to 86400": "conntrack.tcpEstablishedTimeout",
	} {
		if r := sk[what]; !strings.Contains(r, field) || !strings.Contains(r, "restart kube-proxy") {
			t.Errorf("%s: %q, want it to name %s", what, r, field)
		}
	}

	// No finding proposes a close_wait timeout today: plan one on this
	// node's real snapshot with a hand-made finding to see it refused too.
	res, err := doctor.Run(context.Background(), doctor.Input{Root: root}, doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep := &analyze.Report{Findings: []analyze.Finding{{ID: "close-wait-long", Changes: []analyze.Change{
		{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_close_wait", Current: 3600, Proposed: 60, Scope: "netns"}}}}}
	cp, err := tune.Build(rep, res.Snapshot, tune.Options{Target: tune.Target{Root: root, Init: true}})
	if err != nil {
		t.Fatal(err)
	}
	noKubeSteps(cp)
	if r := skippedByWhat(cp)["set tcp_timeout_close_wait to 60"]; !strings.Contains(r, "conntrack.tcpCloseWaitTimeout") {
		t.Errorf("close_wait on the kube-proxy node: %q", r)
	}
}

// An operator's /etc/sysctl.d/99-custom.conf sets nf_conntrack_max: the
// plan's file is named to sort after it and says what it overrides; a
// /etc/sysctl.conf that sets it too (applied after every sysctl.d file) is
// edited in place, keeping the operator's other lines. Written into the
// host, the plan's value is the one the host gets at boot.
func TestOwnershipSysctlFiles(t *testing.T) {
	root := copyFixture(t, "pre515") // near full: the plan raises max to 524288
	const custom = "/etc/sysctl.d/99-custom.conf"
	const conf = "# site settings\nvm.swappiness = 10\nnet.netfilter.nf_conntrack_max=300000\nkernel.panic = 5\n"
	writeFiles(t, root, map[string]string{
		custom:                             "# tuned by hand\nnet.netfilter.nf_conntrack_max = 300000\n",
		"/etc/sysctl.d/10-distro.conf":     "net.netfilter.nf_conntrack_max = 65536\n",
		"/usr/lib/sysctl.d/50-vendor.conf": "net.netfilter.nf_conntrack_max = 131072\n",
	})
	const key = "net.netfilter.nf_conntrack_max"
	boot := func() tune.SysctlLine {
		t.Helper()
		lines, err := tune.SysctlAssignments(root, key)
		if err != nil {
			t.Fatal(err)
		}
		return tune.Winner(lines)[key]
	}
	if w := boot(); w.File != custom || w.Value != "300000" {
		t.Fatalf("before the plan the boot value is %+v, want 99-custom.conf's", w)
	}
	p := planJSON(t, "--root", root, "--no-predict")
	live := stepByKey(p, key)
	if live == nil || live.Proposed != "524288" {
		t.Fatalf("max is not planned: %+v", p.Steps)
	}
	ours := stepByKey(p, "/etc/sysctl.d/99-zz-ctdoctor-conntrack.conf")
	if ours == nil || live.Persist != ours.Key {
		t.Fatalf("the persist file does not sort after %s: live step persists in %q, steps %q", custom, live.Persist, keys(p))
	}
	for _, want := range []string{custom + ":2 sets " + key + " = 300000", "/etc/sysctl.d/10-distro.conf:1", "/usr/lib/sysctl.d/50-vendor.conf:1", "which 99-zz-ctdoctor-conntrack.conf overrides"} {
		if !strings.Contains(ours.Reason, want) {
			t.Errorf("persist step reason %q does not say %q", ours.Reason, want)
		}
	}
	writePlanFiles(t, root, p)
	if w := boot(); w.File != ours.Key || w.Value != "524288" {
		t.Errorf("after writing the plan's files the boot value is %+v, want 524288 from %s", w, ours.Key)
	}
	if b, _ := os.ReadFile(filepath.Join(root, custom)); !strings.Contains(string(b), "300000") {
		t.Errorf("the operator's file was changed: %q", b)
	}
	// Planned again: the files are in place, nothing to write.
	again := planJSON(t, "--root", root, "--no-predict")
	for _, s := range allSteps(again) {
		if s.Actions[0].Kind == tune.KindFile && strings.Contains(s.Key, "sysctl") {
			t.Errorf("a plan made after the files were written writes %s again", s.Key)
		}
	}

	// /etc/sysctl.conf is applied after every sysctl.d file.
	root = copyFixture(t, "pre515")
	writeFiles(t, root, map[string]string{custom: "net.netfilter.nf_conntrack_max = 300000\n", "/etc/sysctl.conf": conf})
	p = planJSON(t, "--root", root, "--no-predict")
	edit := stepByKey(p, "/etc/sysctl.conf")
	if edit == nil || !strings.Contains(edit.Reason, "would override it at boot") {
		t.Fatalf("/etc/sysctl.conf sets the key after the plan's file but is not edited: %q", keys(p))
	}
	want := "# site settings\nvm.swappiness = 10\nnet.netfilter.nf_conntrack_max = 524288\nkernel.panic = 5\n"
	if edit.Proposed != want {
		t.Errorf("/etc/sysctl.conf edited to\n%q\nwant (the operator's lines kept, in place)\n%q", edit.Proposed, want)
	}
	writePlanFiles(t, root, p)
	if w := boot(); w.Value != "524288" {
		t.Errorf("with /etc/sysctl.conf, the boot value after the plan is %+v", w)
	}
}

func keys(p *tune.Plan) []string {
	var k []string
	for _, s := range allSteps(p) {
		k = append(k, s.Key)
	}
	return k
}

// A read-only /sys (a container, a hardened host): the live hash-size
// change is skipped with the reason and only its persistence is planned.
// The parameter file is bind-mounted read-only in a private mount
// namespace (unshare -m) around a ctdoctor run in a child process — root
// ignores file modes, so chmod would not do — and the same plan without
// the mount has the live step.
func TestOwnershipReadOnlySys(t *testing.T) {
	nstest.Require(t, "unshare", "mount")
	root := copyFixture(t, "pre515")
	param := filepath.Join(root, "/sys/module/nf_conntrack/parameters/hashsize")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"plan", "--root", root, "--no-predict", "-o", "json"})
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-ec",
		`mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; exec "$2"`, "sh", param, exe)
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(args))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plan under a read-only %s: %v\n%s", param, err, stderr.String())
	}
	var ro tune.Plan
	if err := json.Unmarshal(out, &ro); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	const live = "/sys/module/nf_conntrack/parameters/hashsize"
	if s := stepByKey(&ro, live); s != nil {
		t.Errorf("the live hash size is planned under a read-only /sys: %s", s.Title)
	}
	if r := skippedByWhat(&ro)["resize the hash table now"]; !strings.Contains(r, live+" is read-only here") || !strings.Contains(r, "run the change on the host itself") {
		t.Errorf("skipped reason: %q (all %+v)", r, ro.Skipped)
	}
	if stepByKey(&ro, "/etc/modprobe.d/ctdoctor-conntrack.conf") == nil {
		t.Errorf("the hash size's persistence is not planned: %q", keys(&ro))
	}
	// The mount was the child's alone: here the file is writable and the
	// plan has the live step.
	f, err := os.OpenFile(param, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("the read-only mount leaked out of the child's mount namespace: %v", err)
	}
	f.Close()
	if rw := planJSON(t, "--root", root, "--no-predict"); stepByKey(rw, live) == nil {
		t.Errorf("without the read-only mount there is no live step either: %q", keys(rw))
	}
}

// CentOS 5 (ip_conntrack, 2.6.18): the plan uses the ip_conntrack names,
// edits /etc/sysctl.conf in place keeping every line the operator had, and
// persists the hash size as an ip_conntrack module option — in
// /etc/modprobe.conf, edited in place, when the host has one.
func TestOwnershipCentOS5(t *testing.T) {
	root := copyFixture(t, "centos5")
	orig, err := os.ReadFile(filepath.Join(root, "/etc/sysctl.conf"))
	if err != nil {
		t.Fatal(err)
	}
	p := planJSON(t, "--root", root, "--no-predict")
	for _, s := range allSteps(p) {
		for _, c := range append(slices.Clone(s.Commands), s.Key) {
			if strings.Contains(c, "nf_conntrack") || strings.Contains(c, "sysctl.d") || strings.Contains(c, "modules-load.d") {
				t.Errorf("a legacy host's plan uses a name or file it does not have: %s", c)
			}
		}
	}
	for _, k := range []string{"net.ipv4.ip_conntrack_max", "net.ipv4.netfilter.ip_conntrack_tcp_timeout_established", "/sys/module/ip_conntrack/parameters/hashsize"} {
		if stepByKey(p, k) == nil {
			t.Errorf("%s not planned: %q", k, keys(p))
		}
	}
	conf := stepByKey(p, "/etc/sysctl.conf")
	if conf == nil {
		t.Fatalf("/etc/sysctl.conf is not edited: %q", keys(p))
	}
	if !strings.HasPrefix(conf.Proposed, string(orig)) {
		t.Errorf("/etc/sysctl.conf loses or moves the operator's lines:\n%s\nwas\n%s", conf.Proposed, orig)
	}
	added := strings.TrimPrefix(conf.Proposed, string(orig))
	if added != "net.ipv4.ip_conntrack_max = 131072\nnet.ipv4.netfilter.ip_conntrack_tcp_timeout_established = 86400\n" {
		t.Errorf("/etc/sysctl.conf gets %q", added)
	}
	if s := stepByKey(p, "/etc/modprobe.d/ip_conntrack.conf"); s == nil || !strings.Contains(s.Proposed, "\noptions ip_conntrack hashsize=131072\n") {
		t.Errorf("hash size persistence: %+v", s)
	}

	// A CentOS 5 host as installed has /etc/modprobe.conf: edit it in place.
	mc := "alias eth0 e1000\nalias scsi_hostadapter ata_piix\noptions ip_conntrack hashsize=2080 # set at install\n"
	writeFiles(t, root, map[string]string{"/etc/modprobe.conf": mc})
	p = planJSON(t, "--root", root, "--no-predict")
	m := stepByKey(p, "/etc/modprobe.conf")
	if m == nil || stepByKey(p, "/etc/modprobe.d/ip_conntrack.conf") != nil {
		t.Fatalf("modprobe.conf not edited in place: %q", keys(p))
	}
	if !strings.HasPrefix(m.Proposed, "alias eth0 e1000\nalias scsi_hostadapter ata_piix\noptions ip_conntrack hashsize=131072") || strings.Count(m.Proposed, "hashsize=") != 1 {
		t.Errorf("/etc/modprobe.conf becomes %q", m.Proposed)
	}
}

// A host whose active tuned profile (packaged, under /usr/lib/tuned) sets
// the hash size and nf_conntrack_max: tuned writes the hash size every
// time it applies the profile, so the plan leaves it to tuned and names
// the file to create; nf_conntrack_max tuned also sets, but it writes
// /etc/sysctl.d back afterwards (reapply_sysctl, on by default), so the
// plan raises it and says so.
func TestOwnershipTuned(t *testing.T) {
	root := copyFixture(t, "pre515")
	writeFiles(t, root, map[string]string{
		"/etc/tuned/active_profile":                "container-host\n",
		"/usr/lib/tuned/container-host/tuned.conf": "[main]\nsummary=containers\n\n[net]\nnf_conntrack_hashsize=131072\n\n[sysctl]\nnet.netfilter.nf_conntrack_max=262144\n",
	})
	p := planJSON(t, "--root", root, "--no-predict")
	for _, k := range []string{"/sys/module/nf_conntrack/parameters/hashsize", "/etc/modprobe.d/ctdoctor-conntrack.conf"} {
		if s := stepByKey(p, k); s != nil {
			t.Errorf("tuned writes the hash size, yet the plan changes %s", k)
		}
	}
	r := skippedByWhat(p)["set hashsize to 524288"]
	for _, want := range []string{"tuned owns it", "/usr/lib/tuned/container-host/tuned.conf ([net])",
		"create /etc/tuned/container-host/tuned.conf with [main] include=container-host and [net] nf_conntrack_hashsize=524288", "tuned-adm profile container-host"} {
		if !strings.Contains(r, want) {
			t.Errorf("hash size skipped reason %q lacks %q", r, want)
		}
	}
	mx := stepByKey(p, "net.netfilter.nf_conntrack_max")
	if mx == nil || mx.Proposed != "524288" || !strings.Contains(mx.Reason, "tuned profile container-host also sets") {
		t.Errorf("max: %+v", mx)
	}
}

// The RHEL layout without its "-i lo -j ACCEPT": new connections to 22,
// 80 and 8081, everything else rejected — loopback to nginx's upstream is
// accepted only as a new connection to 8081, so NOTRACK on loopback needs
// the UNTRACKED accept first.
const rhelRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m multiport --dports 80,8081 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
`

func restore(t *testing.T, ns *nstest.NS, cmd, rules string) {
	t.Helper()
	c := exec.Command("ip", "netns", "exec", ns.Name, cmd)
	c.Stdin = strings.NewReader(rules)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
}

// iptables-legacy and iptables-nft hosts: the same RHEL-style rules
// through each backend, nginx to a loopback upstream under load. The
// plan's firewall commands use that backend's own command (and never the
// other's), and its -o sh script, run as printed, keeps nginx at 200 and
// ends loopback tracking; a plan made afterwards has nothing left to do.
func TestOwnershipIptablesBackends(t *testing.T) {
	for _, tc := range []struct{ backend, other string }{
		{"iptables-legacy", "iptables-nft"},
		{"iptables-nft", "iptables-legacy"},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", tc.backend+"-restore", tc.backend+"-save")
			restore(t, ns, tc.backend+"-restore", rhelRules)
			ns.StartNginx()
			ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")

			p := planJSON(t, "--netns", ns.Name, "--interval", "0", "--no-predict")
			accept := false
			for _, s := range p.Applicable() {
				for _, a := range s.Actions {
					if a.Kind != tune.KindIptables {
						continue
					}
					if a.Argv[0] != tc.backend || a.UndoArgv[0] != tc.backend {
						t.Errorf("iptables action %q / undo %q, want %s", a.Argv, a.UndoArgv, tc.backend)
					}
					accept = accept || slices.Contains(a.Argv, "UNTRACKED") && slices.Contains(a.Argv, "ACCEPT")
				}
				for _, c := range s.Commands {
					if strings.Contains(c, tc.other) {
						t.Errorf("a command uses the other backend: %s", c)
					}
					if strings.Contains(c, "iptables") && !strings.Contains(c, " "+tc.backend+" ") {
						t.Errorf("an iptables command without the backend's name: %s", c)
					}
				}
			}
			if !accept {
				t.Fatalf("no UNTRACKED accept through %s in the plan: %+v", tc.backend, p.Steps)
			}

			script := filepath.Join(t.TempDir(), "fix.sh")
			text := run(t, "plan", "--netns", ns.Name, "--interval", "0", "--no-predict", "-o", "sh")
			if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("sh", script).CombinedOutput(); err != nil {
				t.Fatalf("the script as printed: %v: %s\n%s", err, out, text)
			}
			ns.CurlOK(5, "after the script")
			if saved := ns.Run(tc.backend+"-save", "-t", "filter"); !strings.Contains(saved, "UNTRACKED") {
				t.Errorf("%s-save shows no UNTRACKED accept after the script:\n%s", tc.backend, saved)
			}
			ns.Run("conntrack", "-F")
			ns.Run("wrk", "-t", "1", "-c", "4", "-d", "1s", "-H", "Connection: close", "http://127.0.0.1/")
			ns.CurlOK(3, "after the second load")
			if n := ns.LoopbackEntries(80, 8081); n != 0 {
				t.Errorf("%d loopback entries after the script, want 0", n)
			}
			if again := planJSON(t, "--netns", ns.Name, "--interval", "0", "--no-predict"); len(again.Applicable()) != 0 {
				t.Errorf("a plan after the script still has steps: %q", keys(again))
			}
		})
	}
}

// Docker's rules for a published port (iptables-nft, as Docker writes
// them on current distributions): host port 8080 DNATed to a container's
// port 80, the container's outgoing traffic masqueraded. Traffic from a
// client to the published port fills the table; the plan refuses NOTRACK
// for the port (NATed traffic must stay tracked) and says why.
const dockerRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
COMMIT
`

func TestOwnershipDocker(t *testing.T) {
	host := nstest.New(t, "conntrack", "iptables-nft-restore")
	container := nstest.New(t)
	client := nstest.New(t)
	connectVeth(t, host, client, matrixServerIP, matrixClientIP)
	for _, args := range [][]string{
		{"-n", host.Name, "link", "add", "docker0", "type", "veth", "peer", "name", "eth0", "netns", container.Name},
		{"-n", host.Name, "addr", "add", "172.17.0.1/16", "dev", "docker0"},
		{"-n", host.Name, "link", "set", "docker0", "up"},
		{"-n", container.Name, "addr", "add", "172.17.0.2/16", "dev", "eth0"},
		{"-n", container.Name, "link", "set", "eth0", "up"},
		{"-n", container.Name, "route", "add", "default", "via", "172.17.0.1"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	host.Run("sysctl", "-qw", "net.ipv4.ip_forward=1") // the namespace's own
	restore(t, host, "iptables-nft-restore", dockerRules)
	serveEcho(t, container, "tcp", ":80")

	// 300 short connections from the client to the published port, each
	// answered by the container.
	published := matrixServerIP + ":8080"
	err := client.Do(func() error {
		for i := range 300 {
			c, err := net.DialTimeout("tcp", published, 2*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			buf := make([]byte, 6)
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err != nil || string(buf) != "hello\n" {
				c.Close()
				return fmt.Errorf("connection %d: read %q: %v", i, buf, err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic to the published port: %v", err)
	}
	if out := host.Run("conntrack", "-L", "-p", "tcp", "--orig-port-dst", "8080"); !strings.Contains(out, "src=172.17.0.2") {
		t.Fatalf("the published port's connections are not DNATed to the container:\n%s", out)
	}

	p := planJSON(t, "--netns", host.Name, "--interval", "0", "--no-predict")
	for _, s := range allSteps(p) {
		if s.Notrack != nil && !s.Notrack.Loopback {
			t.Errorf("NOTRACK planned for NATed traffic: %s", s.Title)
		}
	}
	r, ok := skippedByWhat(p)["stop tracking tcp port 8080"]
	if !ok {
		t.Fatalf("NOTRACK for the published port is neither planned nor refused: skipped %+v", p.Skipped)
	}
	if !strings.Contains(r, "the traffic is NATed") || !strings.Contains(r, "table nat chain") {
		t.Errorf("refusal reason %q does not say the port is NATed, by which rule", r)
	}
	t.Logf("refused: %s", r)
}
