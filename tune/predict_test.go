package tune

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/sim"
)

// notrackStub plans a NOTRACK change as one nft step (the real planner
// reads the firewall; the prediction needs only the traffic it exempts).
type notrackStub struct{}

func (notrackStub) PlanNotrack(m analyze.TrafficMatch, t Target) ([]Step, error) {
	return []Step{{Title: "stop tracking " + describeMatch(m), Scope: ScopeNetNS,
		Actions: []Action{{Kind: KindNft, Script: "add table inet ctdoctor\n"}}}}, nil
}

// seedsObserved is the classic nginx case as a host would show it: nginx opens a
// new loopback connection per request to four upstream ports, 200 a
// second, whose TIME_WAIT entries (120 s) need 24,000 entries of a
// 16,384-entry table, beside the visitors' connections; read after 6
// minutes, with the counters sampled one step apart as `ctdoctor` samples
// them one interval apart.
func seedsObserved(t *testing.T) (*host.Snapshot, *analyze.Report, *analyze.Breakdown, *sim.Result) {
	t.Helper()
	const src = `name: seeds
duration: 6m
step: 2s
seed: 3
settings: {nf_conntrack_max: 16384, nf_conntrack_buckets: 16384}
workloads:
  - {name: visitors, proto: tcp, kind: keepalive, rate: 20, client: 198.51.100.0/24, server: 192.0.2.10, server_port: 443, lifetime: {exponential: 30s}, interval: {exponential: 5s}, rtt: 40ms, closer: server}
  - {name: upstream, proto: tcp, kind: short, rate: 200, client: 127.0.0.1, server: 127.0.0.1, server_port: 8080-8083, iface: lo, lifetime: {exponential: 5ms}, closer: server}
`
	sc, err := sim.ParseScenario("seeds.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sim.New(sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	snap := s.Snapshot(base)
	snap.Hostname, snap.NetNS = "web1", host.NetNS{Name: "demo"}
	bd, err := sim.Breakdown(s.Tracker(), snap, 10)
	if err != nil {
		t.Fatal(err)
	}
	rep := analyze.Analyze(snap, bd, snap.TakenAt)
	return snap, rep, bd, res
}

// TestPredictNotrackLoopback (the classic nginx case): on the scenario derived
// from a table that loopback connections fill until it drops, a plan that
// stops tracking loopback predicts drops before and none after.
func TestPredictNotrackLoopback(t *testing.T) {
	snap, rep, bd, observed := seedsObserved(t)
	if observed.DroppedPackets == 0 || rep.Stats.PerSecond["drop"] <= 0 {
		t.Fatalf("the observed table must drop (run %d dropped, %v/s at the reading)", observed.DroppedPackets, rep.Stats.PerSecond["drop"])
	}
	sc, err := sim.Derive(snap, rep, bd)
	if err != nil {
		t.Fatal(err)
	}
	rep.Findings = append(rep.Findings, analyze.Finding{ID: "loopback-tracked",
		Changes: []analyze.Change{{Kind: analyze.ChangeNotrack, Match: &analyze.TrafficMatch{Loopback: true}}}})
	plan, err := Build(rep, snap, Options{Target: Target{Root: t.TempDir(), NetNS: "demo"}, Notrack: notrackStub{}})
	if err != nil {
		t.Fatal(err)
	}
	// The NOTRACK step first, carrying its traffic; table-full's sizing
	// steps are global, which a plan for a namespace does not apply.
	if len(plan.Steps) == 0 || plan.Steps[0].Notrack == nil || !plan.Steps[0].Notrack.Loopback || plan.Global {
		t.Fatalf("plan steps %+v: want the NOTRACK step first, carrying its traffic", plan.Steps)
	}
	var global int
	for _, st := range plan.Steps {
		if st.Scope == ScopeGlobal && live(st) {
			global++
		}
	}
	start := time.Now()
	pred, err := Predict(context.Background(), plan, sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s(in %s)", pred, time.Since(start).Round(time.Millisecond))
	defer func() {
		if t.Failed() {
			t.Logf("the derived scenario:\n%s", pred.Scenario)
		}
	}()
	if pred.Before.Drops == 0 || pred.Before.PeakEntries != 16384 || pred.Before.Max != 16384 || pred.Before.PeakUsage != 1 {
		t.Errorf("before: %+v, want the table full and dropping, as observed", pred.Before)
	}
	if pred.After.Drops != 0 || pred.After.EarlyDrops != 0 || pred.After.PeakUsage > 0.5 {
		t.Errorf("after NOTRACK on loopback: %+v, want no drops and only the visitors' entries", pred.After)
	}
	if !strings.Contains(pred.Verdict, "prevents the drops") || len(pred.NotSimulated) != global {
		t.Errorf("verdict %q, not simulated %v", pred.Verdict, pred.NotSimulated)
	}
	back, err := sim.ParseScenario("prediction.yaml", []byte(pred.Scenario))
	if err != nil || len(back.NoTrack) != 0 || pred.Duration != sc.Duration.Seconds() {
		t.Errorf("the prediction's scenario must be the one run with the current settings: %v, %d notrack rules, %v s", err, len(back.NoTrack), pred.Duration)
	}
	if len(sc.NoTrack) != 0 {
		t.Error("Predict changed the caller's scenario")
	}
}

// TestPredictAfterTheBurst: the classic nginx case read after the load that
// made the kernel drop is over — a table filled to its max by ASSURED
// entries held open and the TIME_WAIT entries of loopback connections,
// the drop counter up, no drops between the two samples: the prediction
// still shows drops before the plan and none after NOTRACK on loopback.
func TestPredictAfterTheBurst(t *testing.T) {
	for _, c := range []struct{ max, open int64 }{
		{10000, 9700},
		// As the kernel test of the classic nginx case fills it: the global max
		// less 300 ASSURED entries, the rest the load's TIME_WAIT.
		{262144, 262144 - 300},
	} {
		tw := c.max - c.open
		snap := &host.Snapshot{Hostname: "web1", CPUs: 2, NetNS: host.NetNS{Name: "demo"},
			Settings: host.Settings{Count: c.max, Max: c.max, Buckets: c.max / 4}}
		bd := &analyze.Breakdown{Total: c.max, L4: map[string]int64{"tcp": c.max}, Loopback: tw,
			TCPState: map[string]int64{"TIME_WAIT": tw, "ESTABLISHED": c.open},
			TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: 443, Count: c.open},
				{Proto: "tcp", Port: 80, Count: tw / 2, Loopback: tw / 2, TimeWait: tw / 2},
				{Proto: "tcp", Port: 8081, Count: tw / 2, Loopback: tw / 2, TimeWait: tw / 2}}}
		rep := &analyze.Report{Table: analyze.TableInfo{Count: c.max, Max: c.max, Usage: 1},
			Stats: analyze.StatsInfo{Available: true, Drop: 1234, Interval: 1, PerSecond: map[string]float64{"drop": 0}}}
		sc, err := sim.Derive(snap, rep, bd)
		if err != nil {
			t.Fatal(err)
		}
		plan := &Plan{Steps: []Step{{Title: "stop tracking loopback", Scope: ScopeNetNS, Notrack: &analyze.TrafficMatch{Loopback: true}}}}
		pred, err := Predict(context.Background(), plan, sc, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("max %d: %s", c.max, pred)
		if pred.Before.Drops == 0 || pred.After.Drops != 0 || pred.After.EarlyDrops != 0 || pred.After.PeakEntries >= c.max {
			t.Errorf("max %d: before %+v after %+v: want drops before, none after (the entries held open only)\n%s", c.max, pred.Before, pred.After, pred.Scenario)
		}
	}
}

// TestPredictSettings: sysctl and hash-size steps become the after run's
// settings (legacy names too); a global step of a per-namespace plan and a
// setting the simulator does not know are listed as not simulated.
func TestPredictSettings(t *testing.T) {
	sc, err := sim.BuiltinScenario("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	plan := &Plan{Steps: []Step{
		{Title: "set tcp_timeout_time_wait", Scope: ScopeNetNS, Actions: []Action{{Kind: KindSysctl,
			Path: "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait", Expect: "120", Value: "30"}}},
		{Title: "raise nf_conntrack_max to 262144", Scope: ScopeGlobal, Actions: []Action{{Kind: KindSysctl,
			Path: "/proc/sys/net/netfilter/nf_conntrack_max", Expect: "65536", Value: "262144"}}},
		{Title: "widen the port range", Scope: ScopeNetNS, Actions: []Action{{Kind: KindSysctl,
			Path: "/proc/sys/net/ipv4/ip_local_port_range", Value: "10000 65535"}}},
		{Title: "persist", Scope: ScopeNetNS, Actions: []Action{{Kind: KindFile, Path: "/etc/sysctl.d/90-ctdoctor-conntrack.conf", Value: "x"}}},
	}}
	pred, err := Predict(context.Background(), plan, sc, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", pred)
	// 650 new connections/s × 120 s fill 65,536 entries at 1:40; × 30 s hold ~20,000.
	if pred.Before.Drops == 0 || pred.After.Drops != 0 || pred.Before.Max != 65536 || pred.After.Max != 65536 {
		t.Errorf("before %+v after %+v: want drops before, none after, the max unchanged (a global step left out)", pred.Before, pred.After)
	}
	if pred.Duration != 240 {
		t.Errorf("duration %v s, want the 240 asked for", pred.Duration)
	}
	notes := strings.Join(pred.NotSimulated, "\n")
	if !strings.Contains(notes, "raise nf_conntrack_max to 262144 (a global step") || !strings.Contains(notes, "ip_local_port_range") || len(pred.NotSimulated) != 2 {
		t.Errorf("not simulated: %q", pred.NotSimulated)
	}
	// With --global the max is raised too.
	plan.Global = true
	after := sc.Clone()
	changes, _ := planOnScenario(plan, after)
	if after.Settings[engine.SetMax] != 262144 || changes[engine.SetTCPTimeoutTimeWait] != 30 {
		t.Errorf("global plan: settings %v, changes %v", after.Settings, changes)
	}
}

func TestSimSetting(t *testing.T) {
	for _, c := range []struct {
		a    Action
		want string
	}{
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/netfilter/nf_conntrack_max"}, engine.SetMax},
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/nf_conntrack_max"}, engine.SetMax},
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/ipv4/ip_conntrack_max"}, engine.SetMax},
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_time_wait"}, engine.SetTCPTimeoutTimeWait},
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/netfilter/nf_conntrack_buckets"}, engine.SetBuckets},
		{Action{Kind: KindModuleParam, Path: "/sys/module/nf_conntrack/parameters/hashsize"}, engine.SetBuckets},
		{Action{Kind: KindModuleParam, Path: "/sys/module/ip_conntrack/parameters/hashsize"}, engine.SetBuckets},
		{Action{Kind: KindModuleParam, Path: "/sys/module/nf_conntrack/parameters/expect_hashsize"}, ""},
		{Action{Kind: KindSysctl, Path: "/proc/sys/net/ipv4/ip_local_port_range"}, ""},
		{Action{Kind: KindSysctl, Path: "net.netfilter.nf_conntrack_max"}, ""}, // not a path
	} {
		got, ok := simSetting(c.a)
		if !ok {
			got = ""
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.a.Path, got, c.want)
		}
	}
	if r := NotrackRules(analyze.TrafficMatch{Proto: "udp", Port: 53}); len(r) != 4 {
		t.Errorf("a service's NOTRACK: %+v, want destination and source port at both hooks", r)
	}
	if r := NotrackRules(analyze.TrafficMatch{Proto: "bogus", Port: 53}); r != nil {
		t.Errorf("unknown protocol: %+v", r)
	}
}

func TestPredictErrors(t *testing.T) {
	sc, err := sim.BuiltinScenario("dns-udp")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Predict(ctx, nil, sc, 0); err == nil {
		t.Error("no plan: no error")
	}
	if _, err := Predict(ctx, &Plan{}, nil, 0); err == nil {
		t.Error("no scenario: no error")
	}
	if _, err := Predict(ctx, &Plan{}, sc, -time.Second); err == nil {
		t.Error("negative duration: no error")
	}
	bad := sc.Clone()
	bad.Workloads = nil
	if _, err := Predict(ctx, &Plan{}, bad, 0); err == nil || !strings.Contains(err.Error(), "no workloads") {
		t.Errorf("invalid scenario: %v", err)
	}
	// A day of 100,000 connections a second is far too long to wait for.
	long := sc.Clone()
	long.Workloads[0].Rate.Value = 1e5
	if _, err := Predict(ctx, &Plan{}, long, 24*time.Hour); err == nil || !strings.Contains(err.Error(), "shorter duration") {
		t.Errorf("a run of hours: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Predict(cancelled, &Plan{}, sc, time.Hour); err == nil {
		t.Error("cancelled: no error")
	}
}

// TestPredictLargeTable: a 250,000-entry host (2,000 loopback connections
// closed a second, 120 s in TIME_WAIT, beside 10,000 open ones): how long
// the prediction takes.
func TestPredictLargeTable(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: simulates a 250,000-entry table twice")
	}
	snap := &host.Snapshot{Hostname: "big", CPUs: 8, NetNS: host.NetNS{Init: true},
		Settings: host.Settings{Count: 250000, Max: 262144, Buckets: 262144}}
	bd := &analyze.Breakdown{Total: 250000, L4: map[string]int64{"tcp": 250000}, Loopback: 240000,
		TCPState: map[string]int64{"TIME_WAIT": 240000, "ESTABLISHED": 10000},
		TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: 8080, Count: 240000, Loopback: 240000, TimeWait: 240000},
			{Proto: "tcp", Port: 443, Count: 10000}}}
	sc, err := sim.Derive(snap, nil, bd)
	if err != nil {
		t.Fatal(err)
	}
	plan := &Plan{Steps: []Step{{Title: "stop tracking loopback", Scope: ScopeNetNS, Notrack: &analyze.TrafficMatch{Loopback: true}}}}
	start := time.Now()
	pred, err := Predict(context.Background(), plan, sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s(in %s of wall time)", pred, time.Since(start).Round(time.Millisecond))
	if pred.Before.PeakEntries < 240000 || pred.After.PeakEntries > 11000 {
		t.Errorf("before %+v after %+v: want ~250,000 entries before, ~10,000 after", pred.Before, pred.After)
	}
}
