package doctor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/sim"
	"github.com/ctdoctor/ctdoctor/tune"
)

// A printed command is a promise: every line of a finding's fixes that is
// not a comment must be one of the plan's step commands, exactly (the
// namespace prefix included), since those are the commands the tests run
// as printed and apply carries out with a journal. checkFixesArePlan fails
// on any other line, and returns the ids of the findings that printed at
// least one command.
func checkFixesArePlan(t *testing.T, name string, rep *analyze.Report, p *tune.Plan) []string {
	t.Helper()
	cmds := map[string]bool{}
	for _, s := range append(slices.Clone(p.Steps), p.GlobalSteps...) {
		for _, c := range s.Commands {
			cmds[c] = true
		}
	}
	var with []string
	for _, f := range rep.Findings {
		n := 0
		for _, l := range f.Fixes {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			n++
			if !cmds[l] {
				t.Errorf("%s: %s prints %q, which is no command of the plan", name, f.ID, l)
			}
		}
		if n > 0 {
			with = append(with, f.ID)
		}
	}
	return with
}

// diagnoseAndPlan is what ctdoctor does (its fixes) and what ctdoctor plan
// does, for the same input.
func diagnoseAndPlan(t *testing.T, in doctor.Input, opt doctor.Options) (*analyze.Report, *tune.Plan) {
	t.Helper()
	ctx := context.Background()
	res, err := doctor.Run(ctx, in, opt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot == nil {
		t.Fatalf("no conntrack: %s", res.Report.Verdict.Reason)
	}
	p, err := doctor.Plan(ctx, in, res, doctor.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Report, p
}

// Every fixture host, a bare listing, a simulated host and a made-up host
// on which every rule that proposes something fires: the printed fixes
// hold no command the plan does not have.
func TestFixesAreThePlansCommands(t *testing.T) {
	ents, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	check := func(name string, in doctor.Input, opt doctor.Options) {
		rep, p := diagnoseAndPlan(t, in, opt)
		for _, id := range checkFixesArePlan(t, name, rep, p) {
			seen[id] = true
		}
		for _, f := range rep.Findings {
			seen[f.ID] = seen[f.ID] || false
		}
	}
	for _, e := range ents {
		if e.IsDir() {
			check(e.Name(), doctor.Input{Root: filepath.Join(fixtures, e.Name())}, doctor.Options{})
		}
	}
	check("listing", doctor.Input{ListingFile: "../conntrack/testdata/kernel-proc.txt"}, doctor.Options{})

	sc, err := sim.BuiltinScenario("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration = time.Minute
	s, err := sim.New(sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	check("simulated", doctor.Input{Host: s.Snapshot(at), Entries: s.Tracker().Flows}, doctor.Options{})

	snap, flows := everyRuleHost()
	check("every rule", doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}, doctor.Options{})
	snap, flows = everyRuleHost()
	snap.Stats = nil // no counters: stats-unavailable
	snap.Kube = host.KubeProxy{Present: true, Evidence: []string{"a test"}}
	check("no counters", doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}, doctor.Options{})

	// The made-up host must make every rule with something to change fire.
	for _, id := range []string{"table-full", "netns-near-full", "insert-failed-races", "chain-too-long", "unreplied-flood",
		"timewait-dominant", "local-ports-exhausted", "loopback-tracked", "established-timeout-long", "kube-proxy-manages", "stats-unavailable"} {
		if _, ok := seen[id]; !ok {
			t.Errorf("no input made %s fire: the test does not cover its fixes", id)
		}
	}
	var printed []string
	for id, ok := range seen {
		if ok {
			printed = append(printed, id)
		}
	}
	slices.Sort(printed)
	t.Logf("findings that printed commands: %v", printed)
}

// everyRuleHost is a host on which most rules fire at once: a full table
// with drops, races and long chains, a namespace near the global limit, and a listing with a SYN and UDP flood, a client out of
// local ports (to 10.0.0.2:8080, 600 ports), loopback TIME_WAIT and idle
// ESTABLISHED entries.
func everyRuleHost() (*host.Snapshot, string) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var st conntrack.Stats
	st.Set(conntrack.StatDrop, 42)
	st.Set(conntrack.StatInsertFailed, 900)
	st.Set(conntrack.StatClashResolve, 10)
	st.Set(conntrack.StatChainTooLong, 7)
	s := &host.Snapshot{Source: "proc", Hostname: "every", Kernel: "6.18.44", CPUs: 2, MemBytes: 8 << 30, TakenAt: now,
		NetNS: host.NetNS{Name: "init", Init: true, Inode: 4026531840},
		Settings: host.Settings{Count: 4096, Max: 4096, Buckets: 1024, HashSize: 1024, SlabSize: 256,
			Timeouts: map[string]int64{"tcp_timeout_established": 432000, "tcp_timeout_time_wait": 120,
				"tcp_timeout_syn_sent": 120, "tcp_timeout_syn_recv": 60, "udp_timeout": 30}, Switches: map[string]int64{}},
		TCP: host.TCPSysctls{KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9, FinTimeout: 60, TWReuse: 2, Retries2: 15,
			PortRangeLow: 20000, PortRangeHigh: 20599},
		Stats:    &host.StatsRead{At: now, Source: "proc", Total: st},
		AllNetNS: []host.NetNSUsage{{NetNS: host.NetNS{Name: "busy", Inode: 4026532000}, Count: 3900, Max: 4096}},
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	for i := range 600 { // a client out of its 600 local ports
		line("tcp      6 100 TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=%d dport=8080 src=10.0.0.2 dst=10.0.0.1 sport=8080 dport=%d [ASSURED] mark=0 use=1", 20000+i, 20000+i)
	}
	for i := range 900 { // loopback TIME_WAIT
		line("tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=%d dport=8081 src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=%d [ASSURED] mark=0 use=1", 30000+i, 30000+i)
	}
	for i := range 800 { // SYNs without an answer
		line("tcp      6 100 SYN_SENT src=10.9.%d.%d dst=10.0.0.1 sport=%d dport=443 [UNREPLIED] src=10.0.0.1 dst=10.9.%d.%d sport=443 dport=%d mark=0 use=1", i/200, i%200+1, 1024+i, i/200, i%200+1, 1024+i)
	}
	for i := range 800 { // UDP without an answer
		line("udp      17 20 src=10.8.%d.%d dst=10.0.0.1 sport=%d dport=5060 [UNREPLIED] src=10.0.0.1 dst=10.8.%d.%d sport=5060 dport=%d mark=0 use=1", i/200, i%200+1, 1024+i, i/200, i%200+1, 1024+i)
	}
	for i := range 500 { // idle ESTABLISHED (silent for days)
		line("tcp      6 1000 ESTABLISHED src=10.7.%d.%d dst=10.0.0.1 sport=%d dport=22 src=10.0.0.1 dst=10.7.%d.%d sport=22 dport=%d [ASSURED] mark=0 use=1", i/200, i%200+1, 2000+i, i/200, i%200+1, 2000+i)
	}
	return s, b.String()
}

// The live case: a namespace with a stateful drop-policy firewall, nginx
// proxying to a loopback upstream and a local port range of 400 ports,
// under short connections. Its printed fixes (NOTRACK in its real ruleset,
// timeouts, the port range) are exactly the plan's commands, each with
// ip netns exec NAME unless the plan lists it for the host itself.
func TestFixesAreThePlansCommandsLive(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", "sysctl")
	ns.Nft(nstest.DemoRuleset)
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40399")
	ns.StartNginx()
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "3s", "-H", "Connection: close", "http://127.0.0.1/")
	in := doctor.Input{NetNS: ns.Name}
	rep, p := diagnoseAndPlan(t, in, doctor.Options{})
	with := checkFixesArePlan(t, "netns "+ns.Name, rep, p)
	for _, id := range []string{"loopback-tracked", "local-ports-exhausted"} {
		if !slices.Contains(with, id) {
			t.Errorf("%s printed no command (findings with commands: %v); the load did not provoke it?", id, with)
		}
	}
	// The port range: after the prose that explains it, in the namespace,
	// followed by where a namespace's own setting persists.
	for _, f := range rep.Findings {
		if f.ID != "local-ports-exhausted" {
			continue
		}
		cmd := slices.Index(f.Fixes, `ip netns exec `+ns.Name+` sysctl -w net.ipv4.ip_local_port_range="10000 65535"`)
		widen := slices.IndexFunc(f.Fixes, func(l string) bool { return strings.HasPrefix(l, "# or widen the client's local port range") })
		if cmd < 0 || widen < 0 || widen > cmd || cmd+1 >= len(f.Fixes) ||
			!strings.HasPrefix(f.Fixes[cmd+1], "# net.ipv4.ip_local_port_range is this namespace's own: it persists wherever the namespace is made") {
			t.Errorf("local-ports-exhausted fixes:\n%s", strings.Join(f.Fixes, "\n"))
		}
	}
	global := map[string]bool{}
	for _, s := range p.GlobalSteps {
		for _, c := range s.Commands {
			global[c] = true
		}
	}
	for _, f := range rep.Findings {
		for _, l := range f.Fixes {
			if l != "" && !strings.HasPrefix(l, "#") && !global[l] && !strings.HasPrefix(l, "ip netns exec "+ns.Name+" ") {
				t.Errorf("%s: %q would run on the host, not in %s", f.ID, l, ns.Name)
			}
		}
	}
}

// NoPlan gives the diagnosis without planning: the same findings and
// changes, their fixes only analyze's prose (no command at all), and
// nothing the planner needs is touched — shown here by a temporary
// directory that cannot be made, which planning a handed-over host needs
// (its warning "fixes: …" appears only when planning).
func TestNoPlan(t *testing.T) {
	snap, flows := everyRuleHost()
	in := doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}
	planned, err := doctor.Diagnose(context.Background(), in, doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	snap, flows = everyRuleHost()
	in = doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}
	bare, err := doctor.Diagnose(context.Background(), in, doctor.Options{NoPlan: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(bare.Warnings) != 0 {
		t.Errorf("NoPlan planned anyway: warnings %q", bare.Warnings)
	}
	if len(bare.Findings) != len(planned.Findings) {
		t.Fatalf("%d findings without planning, %d with", len(bare.Findings), len(planned.Findings))
	}
	commands := 0
	for i, f := range bare.Findings {
		p := planned.Findings[i]
		if f.ID != p.ID || len(f.Changes) != len(p.Changes) {
			t.Errorf("finding %d: %s with %d changes, planned %s with %d", i, f.ID, len(f.Changes), p.ID, len(p.Changes))
		}
		for _, l := range f.Fixes {
			if !strings.HasPrefix(l, "# ") {
				t.Errorf("%s: a command without planning: %q", f.ID, l)
			}
		}
		for _, l := range p.Fixes {
			if !strings.HasPrefix(l, "#") {
				commands++
			}
		}
	}
	if commands == 0 {
		t.Fatal("the planned diagnosis printed no command: the comparison shows nothing")
	}
	// And with TMPDIR still unusable, planning says why its fixes are missing.
	snap, flows = everyRuleHost()
	in = doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}
	failed, err := doctor.Diagnose(context.Background(), in, doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(failed.Warnings, "\n"); !strings.Contains(w, "fixes: ") {
		t.Errorf("planning without a temporary directory gave no warning: %q", w)
	}
}

// PlanFixes turns a NoPlan diagnosis into the planned one: the same fixes
// line for line as Run without NoPlan gives, and a second call adds
// nothing.
func TestPlanFixesLater(t *testing.T) {
	ctx := context.Background()
	in := func() doctor.Input {
		snap, flows := everyRuleHost()
		return doctor.Input{Host: snap, Entries: conntrack.ReadAll(strings.NewReader(flows))}
	}
	want, err := doctor.Run(ctx, in(), doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	i := in()
	got, err := doctor.Run(ctx, i, doctor.Options{NoPlan: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := doctor.PlanFixes(ctx, i, got); err != nil {
			t.Fatal(err)
		}
		for k, f := range got.Report.Findings {
			if !slices.Equal(f.Fixes, want.Report.Findings[k].Fixes) {
				t.Errorf("%s: fixes planned later\n%s\nwant\n%s", f.ID, strings.Join(f.Fixes, "\n"), strings.Join(want.Report.Findings[k].Fixes, "\n"))
			}
		}
	}
	if err := doctor.PlanFixes(ctx, i, nil); !errors.Is(err, doctor.ErrInput) {
		t.Errorf("no result: %v", err)
	}
}
