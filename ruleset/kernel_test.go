package ruleset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// rhelRules is a RHEL-style iptables ruleset (state module, final
// REJECT), with the local upstream's port opened as in nstest.DemoRuleset.
const rhelRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -p tcp --dport 80 -m state --state NEW -j ACCEPT
-A INPUT -p tcp --dport 8081 -m state --state NEW -j ACCEPT
-A INPUT -j REJECT
COMMIT
`

// runPrinted runs commands exactly as printed, each with sh -c on the host.
func runPrinted(t *testing.T, cmds []string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s\n: %v: %s", c, err, out)
		}
	}
}

func readPlan(t *testing.T, ns *nstest.NS, sel Selector) (*Ruleset, *Plan) {
	t.Helper()
	rs, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	p, err := PlanNotrack(rs, sel, Target{NetNS: ns.Name})
	if err != nil {
		t.Fatalf("PlanNotrack: %v", err)
	}
	return rs, p
}

// assertPrefixed checks that every command would run in the namespace.
func assertPrefixed(t *testing.T, ns *nstest.NS, cmds []string) {
	t.Helper()
	for _, c := range cmds {
		if !strings.HasPrefix(c, "ip netns exec "+ns.Name+" ") {
			t.Errorf("command does not run in the namespace (pasted on the host it would change the host):\n%s", c)
		}
	}
}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

// nftHandle returns the handle of the first rule of a chain whose text
// contains substr, from nft -a.
func nftHandle(t *testing.T, ns *nstest.NS, chain, substr string) string {
	t.Helper()
	out := ns.Run("nft", append([]string{"-a", "list", "chain"}, strings.Fields(chain)...)...)
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, substr) {
			if m := handleRE.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		}
	}
	t.Fatalf("no rule %q in chain %s:\n%s", substr, chain, out)
	return ""
}

// TestKernelDemoLoopback is the case a new user hit: a namespace whose
// firewall is table inet fw (input policy drop, loopback not accepted as
// a whole), nginx proxying to a local upstream. The plan's commands, run
// exactly as printed on the host, keep nginx answering, end the tracking
// of loopback to the ports the firewall opens (80 and 8081), keep a
// loopback port it drops (9999, with a listener) dropped, and their undo
// restores the ruleset byte for byte.
func TestKernelDemoLoopback(t *testing.T) {
	ns := nstest.New(t, "nft", "nginx", "curl", "conntrack")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	ns.CurlOK(3, "before the change")
	denied := listenLoopback(t, ns)
	if err := dialLoopback(ns, denied); err == nil {
		t.Fatalf("before the change: a loopback connection to %s, which the firewall drops, succeeded", denied)
	}
	if n := ns.LoopbackEntries(); n == 0 {
		t.Fatal("before the change: no loopback entries; the test does not exercise tracking")
	}
	before := ns.Run("nft", "list", "ruleset")

	_, p := readPlan(t, ns, Loopback())
	if len(p.Steps) != 1 || p.Steps[0].Kind != StepNft {
		t.Fatalf("want one nft step, got %+v", p.Steps)
	}
	cmd := p.Steps[0].Commands[0]
	h := nftHandle(t, ns, "inet fw input", "ct state established,related accept")
	for _, want := range []string{
		"ip netns exec " + ns.Name + " nft -f - <<'EOF'\n",
		"insert rule inet fw input position " + h + ` iif "lo" tcp dport 80 ct state untracked accept`,
		"insert rule inet fw input position " + h + ` iif "lo" tcp sport 8081 tcp flags & (syn | ack) != syn ct state untracked accept`,
		"priority -300", `prerouting iif "lo" tcp dport 8081 notrack`, `output oif "lo" tcp sport 80 tcp flags & (syn | ack) != syn notrack`,
	} {
		if !strings.Contains(cmd, want) {
			t.Errorf("the nft batch lacks %q:\n%s", want, cmd)
		}
	}
	if strings.Contains(cmd, "inet filter") {
		t.Errorf("the plan assumes a table inet filter that does not exist:\n%s", cmd)
	}
	if strings.Index(cmd, "insert rule") > strings.Index(cmd, "notrack") {
		t.Errorf("the accept rule must come before the NOTRACK rules:\n%s", cmd)
	}
	assertPrefixed(t, ns, p.Commands())
	assertPrefixed(t, ns, p.UndoCommands())

	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	ns.CurlOK(10, "after the plan")
	if n := ns.LoopbackEntries(80, 8081); n != 0 {
		t.Errorf("after the plan: %d loopback entries, want 0 (tracking of lo should have ended)\n%s", n, ns.Run("conntrack", "-L"))
	}
	if err := dialLoopback(ns, denied); err == nil {
		t.Errorf("after the plan: a loopback connection to %s, which the firewall drops, succeeded: the plan opened it", denied)
	}
	if _, again := readPlan(t, ns, Loopback()); !again.Empty() {
		t.Errorf("a plan made after applying one should be empty, got %+v", again.Steps)
	}

	runPrinted(t, p.UndoCommands())
	if after := ns.Run("nft", "list", "ruleset"); after != before {
		t.Errorf("undo did not restore the ruleset:\n--- before\n%s\n--- after\n%s", before, after)
	}
	ns.CurlOK(2, "after undo")
	if n := ns.LoopbackEntries(); n == 0 {
		t.Error("after undo: no loopback entries; tracking should have resumed")
	}
}

// TestKernelNaiveNotrackBreaksLoopback is the pitfall: the same NOTRACK
// without the accept rule takes nginx down under that ruleset; the plan
// does not.
func TestKernelNaiveNotrackBreaksLoopback(t *testing.T) {
	ns := nstest.New(t, "nft", "nginx", "curl", "conntrack")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	_, p := readPlan(t, ns, Loopback())

	// The plan's batch without its accept rule: NOTRACK alone.
	var naive []string
	for line := range strings.SplitSeq(p.Steps[0].Commands[0], "\n") {
		if !strings.HasPrefix(line, "insert rule") {
			naive = append(naive, line)
		}
	}
	runPrinted(t, []string{strings.Join(naive, "\n")})
	if code := ns.Curl(3); code != "000" {
		t.Fatalf("naive NOTRACK: HTTP %s, want a timeout (000): untracked packets should match neither rule and be dropped", code)
	}
	ns.Run("nft", "delete", "table", "inet", Loopback().TableName())
	ns.CurlOK(2, "after removing the naive NOTRACK")

	runPrinted(t, p.Commands())
	ns.CurlOK(5, "after the plan")
}

// TestKernelServicePort stops tracking one service (the upstream port):
// its entries end, the rest of the loopback traffic (curl to nginx on 80)
// stays tracked, and undo restores the ruleset.
func TestKernelServicePort(t *testing.T) {
	ns := nstest.New(t, "nft", "nginx", "curl", "conntrack")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	before := ns.Run("nft", "list", "ruleset")
	_, p := readPlan(t, ns, Service("tcp", 8081))
	assertPrefixed(t, ns, p.Commands())
	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	ns.CurlOK(10, "after the plan")
	if n := ns.LoopbackEntries(8081); n != 0 {
		t.Errorf("after the plan: %d entries for port 8081, want 0\n%s", n, ns.Run("conntrack", "-L"))
	}
	if n := ns.LoopbackEntries(80); n == 0 {
		t.Errorf("after the plan: no entries for port 80; only 8081 should be untracked")
	}
	if _, again := readPlan(t, ns, Service("tcp", 8081)); !again.Empty() {
		t.Errorf("a plan made after applying one should be empty, got %+v", again.Steps)
	}
	runPrinted(t, p.UndoCommands())
	if after := ns.Run("nft", "list", "ruleset"); after != before {
		t.Errorf("undo did not restore the ruleset:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// normalizeCounters removes packet and byte counts, and iptables-save's
// comment lines (they carry the time), from a listing.
func normalizeCounters(s string) string {
	s = regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(s, "counter")
	s = regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(s, "[]")
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// testIptables runs the demo case under an iptables ruleset of one
// backend: the naive NOTRACK breaks nginx, the plan (with its NOTRACK in
// nft, or in the iptables raw table when nft is taken away) does not, and
// undo restores iptables-save and nft list ruleset.
func testIptables(t *testing.T, backend Backend, noNft bool) {
	tool := string(backend) // iptables-legacy, iptables-nft
	ns := nstest.New(t, "nft", "nginx", "curl", "conntrack", tool, tool+"-restore", tool+"-save")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, tool+"-restore")
	cmd.Stdin = strings.NewReader(rhelRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s-restore: %v: %s", tool, err, out)
	}
	ns.StartNginx()
	ns.CurlOK(2, "before the change")
	denied := listenLoopback(t, ns)

	// The pitfall, with iptables: NOTRACK in raw, no UNTRACKED accept.
	for _, c := range []string{"PREROUTING -i lo", "OUTPUT -o lo"} {
		ns.Run(tool, append([]string{"-t", "raw", "-A"}, append(strings.Fields(c), "-j", "NOTRACK")...)...)
	}
	if code := ns.Curl(3); code == "200" {
		t.Fatalf("naive NOTRACK under %s: HTTP 200, want a failure", tool)
	}
	for _, c := range []string{"PREROUTING -i lo", "OUTPUT -o lo"} {
		ns.Run(tool, append([]string{"-t", "raw", "-D"}, append(strings.Fields(c), "-j", "NOTRACK")...)...)
	}
	ns.CurlOK(2, "after removing the naive NOTRACK")

	ip6tool := "ip6" + strings.TrimPrefix(tool, "ip")
	saveBefore := normalizeCounters(ns.Run(tool+"-save") + ns.Run(ip6tool+"-save"))
	nftBefore := normalizeCounters(ns.Run("nft", "list", "ruleset"))
	rs, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if noNft {
		rs.Tools.Nft = ""
	}
	p, err := PlanNotrack(rs, Loopback(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) < 2 || p.Steps[0].Kind != StepIptables || p.Steps[0].Backend != backend {
		t.Fatalf("want the %s accept step first, got %+v", backend, p.Steps)
	}
	wantFirst := fmt.Sprintf("ip netns exec %s %s -w -I INPUT 1 -i lo -p tcp -m tcp --dport 80 -m conntrack --ctstate UNTRACKED", ns.Name, tool)
	if !strings.HasPrefix(p.Steps[0].Commands[0], wantFirst) {
		t.Errorf("first command:\n%s\nwant it to start with\n%s", p.Steps[0].Commands[0], wantFirst)
	}
	for _, c := range p.Commands() {
		if regexp.MustCompile(`(insert|add) rule ip6? (filter|raw)`).MatchString(c) {
			t.Errorf("nft command into an iptables table:\n%s", c)
		}
	}
	assertPrefixed(t, ns, p.Commands())
	assertPrefixed(t, ns, p.UndoCommands())

	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	ns.CurlOK(10, "after the plan")
	if n := ns.LoopbackEntries(); n != 0 {
		t.Errorf("after the plan: %d loopback entries, want 0\n%s", n, ns.Run("conntrack", "-L"))
	}
	if err := dialLoopback(ns, denied); err == nil {
		t.Errorf("after the plan: a loopback connection to %s, which the firewall rejects, succeeded: the plan opened it", denied)
	}
	rs2, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if noNft {
		rs2.Tools.Nft = ""
	}
	if again, err := PlanNotrack(rs2, Loopback(), Target{NetNS: ns.Name}); err != nil || !again.Empty() {
		t.Errorf("a plan made after applying one should be empty, got %v %+v", err, again)
	}
	runPrinted(t, p.UndoCommands())
	saveAfter := normalizeCounters(ns.Run(tool+"-save") + ns.Run(ip6tool+"-save"))
	nftAfter := normalizeCounters(ns.Run("nft", "list", "ruleset"))
	if noNft {
		// The raw tables the plan had to create stay, empty, as its notes say.
		for _, n := range p.Notes {
			if strings.Contains(n, "no raw table yet") {
				saveAfter = emptyRawSave.ReplaceAllString(saveAfter, "")
				saveBefore = emptyRawSave.ReplaceAllString(saveBefore, "")
				nftAfter = emptyRawNft.ReplaceAllString(nftAfter, "")
				nftBefore = emptyRawNft.ReplaceAllString(nftBefore, "")
				t.Logf("note: %s", n)
			}
		}
	}
	if saveAfter != saveBefore {
		t.Errorf("undo did not restore %s-save and %s-save:\n--- before\n%s\n--- after\n%s", tool, ip6tool, saveBefore, saveAfter)
	}
	if after := nftAfter; after != nftBefore {
		t.Errorf("undo did not restore nft list ruleset:\n--- before\n%s\n--- after\n%s", nftBefore, after)
	}
	ns.CurlOK(2, "after undo")
}

// An empty raw table in iptables-save and in nft list ruleset.
var (
	emptyRawSave = regexp.MustCompile(`\*raw\n:PREROUTING ACCEPT \[\]\n:OUTPUT ACCEPT \[\]\nCOMMIT\n`)
	emptyRawNft  = regexp.MustCompile(`table ip6? raw \{\n\tchain PREROUTING \{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\}\n\n\tchain OUTPUT \{\n\t\ttype filter hook output priority raw; policy accept;\n\t\}\n\}\n`)
)

func TestKernelIptablesLegacy(t *testing.T) { testIptables(t, BackendIptablesLegacy, false) }

func TestKernelIptablesNft(t *testing.T) { testIptables(t, BackendIptablesNft, false) }

// The same with the NOTRACK in the iptables raw table (a host without nft).
func TestKernelIptablesLegacyRaw(t *testing.T) { testIptables(t, BackendIptablesLegacy, true) }

func TestKernelIptablesNftRaw(t *testing.T) { testIptables(t, BackendIptablesNft, true) }

// TestKernelRefusals: NAT and helpers read from the kernel give the typed
// refusal; a masquerade on another interface does not refuse loopback.
func TestKernelRefusals(t *testing.T) {
	cases := []struct {
		name    string
		nft     string   // an nft ruleset, or
		ipt     []string // iptables commands (tool first)
		sel     Selector
		want    error
		planned bool
	}{
		{name: "dnat on the port", nft: `table ip nat { chain pre { type nat hook prerouting priority dstnat; tcp dport 8080 dnat to 10.0.0.2:80; }
}`,
			sel: Service("tcp", 8080), want: ErrNATed},
		{name: "masquerade on the port", nft: `table ip nat { chain post { type nat hook postrouting priority srcnat; tcp dport 8080 masquerade; }
}`,
			sel: Service("tcp", 8080), want: ErrNATed},
		{name: "masquerade of all, loopback", nft: `table ip nat { chain post { type nat hook postrouting priority srcnat; masquerade; }
}`,
			sel: Loopback(), want: ErrNATed},
		{name: "redirect in output, loopback", nft: `table inet nat { chain out { type nat hook output priority -100; tcp dport 80 redirect to :8081; }
}`,
			sel: Loopback(), want: ErrNATed},
		{name: "ct helper", nft: `table inet fw {
	ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }
	chain pre { type filter hook prerouting priority filter; tcp dport 21 ct helper set "ftp-standard"; }
}`, sel: Service("tcp", 21), want: ErrHelper},
		{name: "iptables-legacy CT helper", ipt: []string{"iptables-legacy -t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp"},
			sel: Service("tcp", 21), want: ErrHelper},
		{name: "iptables-nft DNAT", ipt: []string{"iptables-nft -t nat -A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80"},
			sel: Service("tcp", 8080), want: ErrNATed},
		{name: "iptables-nft MASQUERADE, loopback", ipt: []string{"iptables-nft -t nat -A POSTROUTING -j MASQUERADE"},
			sel: Loopback(), want: ErrNATed},
		{name: "masquerade on eth0 leaves loopback alone", nft: `table ip nat { chain post { type nat hook postrouting priority srcnat; oifname "eth0" masquerade; }
}`,
			sel: Loopback(), planned: true},
		{name: "dnat of another port", nft: `table ip nat { chain pre { type nat hook prerouting priority dstnat; tcp dport 8080 dnat to 10.0.0.2:80; }
}`,
			sel: Service("tcp", 8081), planned: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := nstest.New(t, "nft", "iptables-legacy", "iptables-nft")
			if tc.nft != "" {
				ns.Nft(tc.nft)
			}
			for _, c := range tc.ipt {
				f := strings.Fields(c)
				ns.Run(f[0], f[1:]...)
			}
			rs, err := Read(context.Background(), Target{NetNS: ns.Name})
			if err != nil {
				t.Fatal(err)
			}
			p, err := PlanNotrack(rs, tc.sel, Target{NetNS: ns.Name})
			if tc.planned {
				if err != nil || p.Empty() {
					t.Fatalf("want a plan, got %v %+v", err, p)
				}
				return
			}
			var re *RefusedError
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrRefused) || !errors.As(err, &re) {
				t.Fatalf("got %v (plan %+v), want a RefusedError for %v", err, p, tc.want)
			}
			if re.Rule == "" || re.Detail == "" {
				t.Errorf("the refusal should name the rule and say why: %+v", re)
			}
			t.Logf("%v", err)
		})
	}
}

// readRuleset exercises the decoder: verdict maps, named and interval
// sets, interface names and wildcards, negation, jumps, NAT, helpers,
// fib, NOTRACK, and an iptables-nft table beside it.
const readRuleset = `table inet fw {
	ct helper ftp-standard {
		type "ftp" protocol tcp
		l3proto inet
	}
	set web {
		type inet_service
		elements = { 80, 443 }
	}
	chain input {
		type filter hook input priority filter; policy drop;
		ct state vmap { established : accept, related : accept, invalid : drop }
		iif "lo" accept
		iifname "eth*" tcp dport { 22, 1000-2000 } ct state new accept
		tcp dport @web accept
		udp sport != 53 drop
		jump extra
	}
	chain extra {
		ct status dnat accept
	}
	chain output {
		type filter hook output priority 10; policy accept;
		oif "lo" tcp sport 8081 accept
	}
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 dnat ip to 10.0.0.2:80
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" masquerade
	}
	chain redir {
		type nat hook output priority -100; policy accept;
		tcp dport 81 redirect to :8081
	}
	chain helpers {
		type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp-standard"
	}
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		fib daddr type local tcp dport 9000 notrack
	}
}
`

func findTable(rs *Ruleset, fam Family, name string) []*Table {
	var out []*Table
	for _, t := range rs.Tables {
		if t.Family == fam && t.Name == name {
			out = append(out, t)
		}
	}
	return out
}

func TestKernelReadDecodes(t *testing.T) {
	ns := nstest.New(t, "nft", "iptables-nft", "iptables-nft-save")
	ns.Nft(readRuleset)
	ns.Run("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-m", "state", "--state", "NEW", "-j", "ACCEPT")
	rs, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Warnings) > 0 {
		t.Errorf("warnings: %v", rs.Warnings)
	}
	fws := findTable(rs, "inet", "fw")
	if len(fws) != 1 || fws[0].Backend != BackendNft {
		t.Fatalf("inet fw: %+v", fws)
	}
	fw := fws[0]

	// Chains: hook, type, priority, policy as written.
	for _, want := range []Chain{
		{Name: "input", Hook: HookInput, Type: "filter", Priority: 0, Policy: "drop"},
		{Name: "extra"},
		{Name: "output", Hook: HookOutput, Type: "filter", Priority: 10, Policy: "accept"},
		{Name: "pre", Hook: HookPrerouting, Type: "nat", Priority: -100, Policy: "accept"},
		{Name: "post", Hook: HookPostrouting, Type: "nat", Priority: 100, Policy: "accept"},
		{Name: "redir", Hook: HookOutput, Type: "nat", Priority: -100, Policy: "accept"},
		{Name: "raw", Hook: HookPrerouting, Type: "filter", Priority: -300, Policy: "accept"},
	} {
		c := fw.Chain(want.Name)
		if c == nil || c.Hook != want.Hook || c.Type != want.Type || c.Priority != want.Priority || c.Policy != want.Policy {
			t.Errorf("chain %s: got %+v, want %+v", want.Name, c, want)
		}
	}

	// Handles: the same as nft -a prints, in order.
	for _, c := range fw.Chains {
		out := ns.Run("nft", "-a", "list", "chain", "inet", "fw", c.Name)
		var handles []string
		for line := range strings.SplitSeq(out, "\n") {
			if m := handleRE.FindStringSubmatch(line); m != nil && !strings.Contains(line, "chain ") {
				handles = append(handles, m[1])
			}
		}
		if len(handles) != len(c.Rules) {
			t.Fatalf("chain %s: %d rules, nft -a shows %d:\n%s", c.Name, len(c.Rules), len(handles), out)
		}
		for i, r := range c.Rules {
			if strconv.FormatUint(r.Handle, 10) != handles[i] || r.Index != i+1 {
				t.Errorf("chain %s rule %d: handle %d index %d, nft -a says handle %s", c.Name, i+1, r.Handle, r.Index, handles[i])
			}
		}
	}

	in := fw.Chain("input").Rules
	// google/nftables v0.3.0 does not decode the verdicts of map elements:
	// the map is read as "any verdict", keyed on ct state.
	if r := in[0]; r.Verdict != "vmap" || r.VMap == nil || r.VMap.Field != FieldCtState || !r.Stateful || !r.VMap.Unknown {
		t.Errorf("ct state vmap: %+v %+v", r, r.VMap)
	}
	if c := cond(in[1], FieldIIF); c == nil || c.Values[0] != (Range{1, 1}) || in[1].Verdict != "accept" || in[1].Stateful {
		t.Errorf(`iif "lo" accept: %+v`, in[1])
	}
	r := in[2]
	if c := cond(r, FieldIIFName); c == nil || c.Names[0] != "eth*" {
		t.Errorf(`iifname "eth*": %+v`, r)
	}
	if c := cond(r, FieldDPort); c == nil || len(c.Values) != 2 || c.Values[0] != (Range{22, 22}) || c.Values[1] != (Range{1000, 2000}) {
		t.Errorf("dport { 22, 1000-2000 }: %+v", c)
	}
	if c := cond(r, FieldCtState); c == nil || c.Mask != CtNew || !r.Stateful {
		t.Errorf("ct state new: %+v", r)
	}
	if c := cond(in[3], FieldDPort); c == nil || len(c.Values) != 2 || c.Values[0] != (Range{80, 80}) || c.Values[1] != (Range{443, 443}) {
		t.Errorf("dport @web: %+v", in[3])
	}
	if c, p := cond(in[4], FieldSPort), cond(in[4], FieldL4Proto); c == nil || !c.Neg || c.Values[0] != (Range{53, 53}) || p.Values[0] != (Range{17, 17}) || in[4].Verdict != "drop" {
		t.Errorf("udp sport != 53 drop: %+v", in[4])
	}
	if in[5].Verdict != "jump" || in[5].Target != "extra" {
		t.Errorf("jump extra: %+v", in[5])
	}
	if r := fw.Chain("extra").Rules[0]; !r.Stateful || cond(r, FieldCt) == nil {
		t.Errorf("ct status dnat: %+v", r)
	}
	if r := fw.Chain("output").Rules[0]; cond(r, FieldOIF) == nil || cond(r, FieldSPort).Values[0] != (Range{8081, 8081}) {
		t.Errorf(`oif "lo" tcp sport 8081: %+v`, r)
	}
	for chain, want := range map[string]string{"pre": "dnat", "post": "masquerade", "redir": "redirect"} {
		if r := fw.Chain(chain).Rules[0]; r.NAT != want {
			t.Errorf("chain %s: NAT %q, want %q", chain, r.NAT, want)
		}
	}
	if r := fw.Chain("helpers").Rules[0]; r.Helper != "ftp-standard" {
		t.Errorf("ct helper set: %+v", r)
	}
	if r := fw.Chain("raw").Rules[0]; !r.Notrack || cond(r, FieldDaddrType) == nil || cond(r, FieldDPort).Values[0] != (Range{9000, 9000}) {
		t.Errorf("fib daddr type local tcp dport 9000 notrack: %+v", r)
	}

	// The iptables-nft table: once, as iptables-nft, from its save text.
	filters := findTable(rs, "ip", "filter")
	if len(filters) != 1 || filters[0].Backend != BackendIptablesNft {
		t.Fatalf("ip filter: want one iptables-nft table, got %+v", filters)
	}
	if r := filters[0].Chain("INPUT").Rules[0]; !r.Stateful || !strings.Contains(r.Text, "--state NEW") {
		t.Errorf("iptables-nft rule: %+v", r)
	}
}

// TestKernelTargets: a PID, a path and the caller's own namespace read the
// same ruleset as the name; a plan for a PID runs through nsenter in that
// namespace, and never on the host.
func TestKernelTargets(t *testing.T) {
	ns := nstest.New(t, "nft", "nsenter", "sleep")
	ns.Nft(nstest.DemoRuleset)
	sleep := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	pid := strconv.Itoa(sleep.Process.Pid)

	want, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	js := func(rs *Ruleset) string {
		c := *rs
		c.NetNS = ""
		b, _ := jsonMarshal(c)
		return b
	}
	for _, spec := range []string{pid, ns.Path()} {
		got, err := Read(context.Background(), Target{NetNS: spec})
		if err != nil {
			t.Fatalf("Read(%s): %v", spec, err)
		}
		if js(got) != js(want) {
			t.Errorf("Read(%s) differs from Read(%s)", spec, ns.Name)
		}
	}
	var own *Ruleset
	if err := ns.Do(func() error {
		var err error
		own, err = Read(context.Background(), Target{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if js(own) != js(want) {
		t.Errorf("Read of the caller's own namespace (a thread inside %s) differs", ns.Name)
	}

	if _, err := Read(context.Background(), Target{NetNS: "ctdtest-does-not-exist"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("a missing namespace: got %v", err)
	}

	p, err := PlanNotrack(want, Loopback(), Target{NetNS: pid})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(p.Commands(), p.UndoCommands()...) {
		if !strings.HasPrefix(c, "nsenter --net=/proc/"+pid+"/ns/net -- ") {
			t.Fatalf("command without the nsenter prefix:\n%s", c)
		}
	}
	runPrinted(t, p.Commands())
	if _, err := ns.Output("nft", "list", "table", "inet", Loopback().TableName()); err != nil {
		t.Errorf("the NOTRACK table is not in the namespace: %v", err)
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), Loopback().TableName()) {
		t.Fatalf("the plan changed the host's ruleset:\n%s", out)
	}
	runPrinted(t, p.UndoCommands())
	if _, err := ns.Output("nft", "list", "table", "inet", Loopback().TableName()); err == nil {
		t.Error("undo left the NOTRACK table")
	}
}

// listenLoopback listens on a loopback port in the namespace (a port the
// test firewalls do not open) until the test ends, accepting and closing
// connections, and returns its address.
func listenLoopback(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:9999")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// dialLoopback connects to addr from inside the namespace, giving up after
// a second (a dropped SYN times out).
func dialLoopback(ns *nstest.NS, addr string) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// TestKernelRHELDefaultNeedsNoAccept: RHEL's default ruleset accepts
// "-i lo" after its state rule, without looking at conntrack, so untracked
// loopback packets are accepted as they are: the plan adds only NOTRACK,
// and nginx keeps answering.
func TestKernelRHELDefaultNeedsNoAccept(t *testing.T) {
	ns := nstest.New(t, "nft", "nginx", "curl", "conntrack", "iptables-legacy", "iptables-legacy-restore")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-legacy-restore")
	cmd.Stdin = strings.NewReader(`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
COMMIT
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v: %s", err, out)
	}
	ns.StartNginx()
	_, p := readPlan(t, ns, Loopback())
	if len(p.Steps) != 1 || p.Steps[0].Kind != StepNft || hasCommand(p, "iptables") {
		t.Fatalf("want only the NOTRACK table:\n%s", strings.Join(p.Commands(), "\n"))
	}
	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	ns.CurlOK(10, "after the plan")
	if n := ns.LoopbackEntries(); n != 0 {
		t.Errorf("after the plan: %d loopback entries, want 0", n)
	}
	runPrinted(t, p.UndoCommands())
}

// TestReadWithoutPrivilege: without CAP_NET_ADMIN, Read fails with
// ErrPermission. The test runs itself again as nobody (setpriv).
func TestReadWithoutPrivilege(t *testing.T) {
	if os.Getenv("CTDOCTOR_RULESET_UNPRIV") == "1" {
		_, err := Read(context.Background(), Target{})
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("as uid %d: got %v, want ErrPermission", os.Geteuid(), err)
		}
		t.Logf("as uid %d: %v", os.Geteuid(), err)
		return
	}
	nstest.Require(t, "setpriv")
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		os.Args[0], "-test.run=^TestReadWithoutPrivilege$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CTDOCTOR_RULESET_UNPRIV=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
