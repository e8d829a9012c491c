package sim

import (
	"context"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/host"
)

// deriveHost is a host as ctdoctor reads one: web1, namespace demo, 2
// CPUs, a 65,536-entry table, tcp_timeout_time_wait lowered to 60 s.
func deriveHost() *host.Snapshot {
	return &host.Snapshot{Hostname: "web1", Kernel: "6.18.44", CPUs: 2, NetNS: host.NetNS{Name: "demo"},
		TakenAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Settings: host.Settings{Count: 20100, Max: 65536, Buckets: 16384, HashSize: 16384,
			Timeouts: map[string]int64{"tcp_timeout_time_wait": 60, "tcp_timeout_syn_sent": 120, "udp_timeout": 30,
				"icmp_timeout": 30, "tcp_timeout_established": 432000, "tcp_timeout_syn_recv": 60},
			Switches: map[string]int64{"tcp_loose": 1, "acct": 0}},
		TCP: host.TCPSysctls{KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9, PortRangeLow: 32768, PortRangeHigh: 60999}}
}

// deriveBreakdown is a table of 20,100 entries with known counts: nginx
// to a loopback upstream on 8080, visitors on 443 (some SYNs never
// answered), DNS on 53 partly over loopback, services beyond the top list,
// ICMP, and GRE.
func deriveBreakdown() *analyze.Breakdown {
	return &analyze.Breakdown{Total: 20100,
		L4:        map[string]int64{"tcp": 18500, "udp": 1500, "icmp": 60, "gre": 40},
		TCPState:  map[string]int64{"TIME_WAIT": 15280, "ESTABLISHED": 2854, "SYN_SENT": 366},
		Unreplied: map[string]int64{"tcp": 366, "udp": 150, "icmp": 6},
		Loopback:  12300,
		TopServices: []analyze.ServiceCount{
			{Proto: "tcp", Port: 8080, Count: 12000, Loopback: 12000, TimeWait: 11880},
			{Proto: "tcp", Port: 443, Count: 6000, TimeWait: 3000, Unreplied: 366},
			{Proto: "udp", Port: 53, Count: 1500, Loopback: 300, Unreplied: 150},
			{Proto: "tcp", Port: 45123, Count: 3, Unreplied: 0}, // a handful: joins other-tcp
		},
		TopTuples: []analyze.TupleCount{{Src: "127.0.0.1", Dst: "127.0.0.1", Port: 8080, Count: 12000, TimeWait: 11880}},
	}
}

func workloadByName(sc *Scenario, name string) *Workload {
	for i := range sc.Workloads {
		if sc.Workloads[i].Name == name {
			return &sc.Workloads[i]
		}
	}
	return nil
}

func names(sc *Scenario) []string {
	var n []string
	for _, w := range sc.Workloads {
		n = append(n, w.Name)
	}
	return n
}

// TestDeriveLittlesLaw: the rates are the hand-computed entries ÷ time in
// the table, per service and side of loopback.
func TestDeriveLittlesLaw(t *testing.T) {
	sc, err := Derive(deriveHost(), nil, deriveBreakdown())
	if err != nil {
		t.Fatal(err)
	}
	// An unanswered connection keeps its entry tcp_timeout_syn_sent, 120 s:
	// its SYN retransmissions (the last 63 s after the first) do not renew it.
	const ss = 120
	for _, c := range []struct {
		name       string
		rate       float64
		unanswered float64
		iface      string
		stop       time.Duration
		kind       Kind
	}{
		{"tcp-8080-lo", 11880.0 / 60, 0, "lo", 0, Short},                                           // 198 closes/s
		{"tcp-8080-lo-open", 120.0 / 10, 0, "lo", 10e9, Keepalive},                                 // 12000−11880 open, over 10 s
		{"tcp-443", 3000.0/60 + 366.0/ss, (366.0 / ss) / (3000.0/60 + 366.0/ss), "eth0", 0, Short}, // 50 + 2
		{"tcp-443-open", (6000.0 - 3000 - 366) / 10, 0, "eth0", 10e9, Keepalive},
		{"udp-53-lo", 300.0 / 30, 0.1, "lo", 0, Short},
		{"udp-53", 1200.0 / 30, 0.1, "eth0", 0, Short},
		// 18,500 − 18,000 TCP entries beyond the services modelled (the 3 of
		// tcp/45123 among them), 400 of them TIME_WAIT
		{"other-tcp", (15280.0 - 11880 - 3000) / 60, 0, "eth0", 0, Short},
		{"other-tcp-open", (18500.0 - 18000 - 400) / 10, 0, "eth0", 10e9, Keepalive},
		{"icmp", 60.0 / 30, 0.1, "eth0", 0, Short},
	} {
		w := workloadByName(sc, c.name)
		if w == nil {
			t.Errorf("no workload %s in %v", c.name, names(sc))
			continue
		}
		if math.Abs(w.Rate.Value-c.rate) > 5e-4*c.rate || w.Rate.Kind != Constant {
			t.Errorf("%s: rate %v, want %.4g (Little's law)", c.name, w.Rate.Value, c.rate)
		}
		if math.Abs(w.Unanswered-c.unanswered) > 1e-3*c.unanswered+1e-12 {
			t.Errorf("%s: unanswered %v, want %.4g", c.name, w.Unanswered, c.unanswered)
		}
		if w.Iface != c.iface || w.Stop != c.stop || (w.Proto == conntrack.TCP && w.Kind != c.kind) {
			t.Errorf("%s: iface %s stop %s kind %s, want %s %s %s", c.name, w.Iface, w.Stop, w.Kind, c.iface, c.stop, c.kind)
		}
	}
	if len(sc.Workloads) != 9 {
		t.Errorf("workloads %v, want the 9 above", names(sc))
	}
	if w := workloadByName(sc, "udp-53"); w == nil || !w.DNS || w.ServerPorts != (engine.PortRange{Lo: 53, Hi: 53}) {
		t.Errorf("udp-53 must be DNS-like to port 53: %+v", w)
	}
	if w := workloadByName(sc, "tcp-8080-lo"); w == nil || w.Clients[0] != netip.MustParsePrefix("127.0.0.1/32") || w.Servers[0] != netip.MustParsePrefix("127.0.0.1/32") {
		t.Errorf("tcp-8080-lo must use the loopback tuple the table showed: %+v", w)
	}
	// The longest churning residence is the unanswered SYN's 120 s: 2 × 120 + 10, rounded up to 10 s.
	if sc.Duration != 250*time.Second {
		t.Errorf("duration %s, want 4m10s", sc.Duration)
	}
	want := map[string]int64{engine.SetMax: 65536, engine.SetBuckets: 16384, engine.SetTCPTimeoutTimeWait: 60}
	if !reflect.DeepEqual(sc.Settings, want) {
		t.Errorf("settings %v, want %v (the host's max and buckets, and what differs from the defaults)", sc.Settings, want)
	}
	if sc.CPUs != 2 || sc.Name != "derived-web1-demo" {
		t.Errorf("cpus %d name %q", sc.CPUs, sc.Name)
	}
	for _, s := range []string{"11,880 TIME_WAIT ÷ 60 s (tcp_timeout_time_wait) = 198 closed connections/s",
		"366 unreplied (SYN_SENT) ÷ 120 s", "not modelled", "40 gre", "web1 (network namespace demo)"} {
		if !strings.Contains(sc.Description, s) {
			t.Errorf("description lacks %q:\n%s", s, sc.Description)
		}
	}
}

// TestDeriveLowerBounds: a tuple that has run out of local ports, and a
// table at its max that drops, give rates that are lower bounds; the drops
// scale them up by one connection per 1 + syn_retries dropped packets.
func TestDeriveLowerBounds(t *testing.T) {
	snap := deriveHost()
	snap.Settings.Count, snap.Settings.Max = 28300, 28300
	bd := &analyze.Breakdown{Total: 28300, L4: map[string]int64{"tcp": 28300},
		TCPState: map[string]int64{"TIME_WAIT": 28200, "ESTABLISHED": 100}, Loopback: 28300,
		TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: 8080, Count: 28300, Loopback: 28300, TimeWait: 28200}},
		TopTuples:   []analyze.TupleCount{{Src: "127.0.0.1", Dst: "127.0.0.1", Port: 8080, Count: 28232, TimeWait: 28200}}}
	rep := &analyze.Report{Table: analyze.TableInfo{Count: 28300, Max: 28300}, Findings: []analyze.Finding{{ID: "local-ports-exhausted"}},
		Stats: analyze.StatsInfo{Available: true, Interval: 1, PerSecond: map[string]float64{"drop": 70, "early_drop": 0}}}
	sc, err := Derive(snap, rep, bd)
	if err != nil {
		t.Fatal(err)
	}
	w := workloadByName(sc, "tcp-8080-lo")
	if w == nil {
		t.Fatalf("no tcp-8080-lo: %v", names(sc))
	}
	// 28,200 / 60 = 470 closes/s admitted; 70 drops/s ÷ 7 = 10 more; all
	// scaled to fill the room the 100 open leave with 3 × √100 to spare.
	fill := (28300 - 100 + 3*10) / 28200.0
	if want := (470 + 10) * fill; math.Abs(w.Rate.Value-want) > 0.05 {
		t.Errorf("rate %v, want (470 + 70/7) × %.5f = %.2f", w.Rate.Value, fill, want)
	}
	if len(w.Clients) != 1 || w.Clients[0].Addr().String() != "127.0.0.1" || w.Servers[0].Addr().String() != "127.0.0.1" {
		t.Errorf("a capped tuple must be simulated on the same tuple: %v → %v", w.Clients, w.Servers)
	}
	for _, s := range []string{"run out of local ports (local-ports-exhausted)", "lower bound", "70 packets/s", "70 ÷ 7 = 10 connections/s"} {
		if !strings.Contains(sc.Description, s) {
			t.Errorf("description lacks %q:\n%s", s, sc.Description)
		}
	}
	// Read at 95% of the max after the kernel's garbage collector evicted
	// TIME_WAIT entries: the churning entries are scaled to fill the room
	// the 100 open ones leave, then by the drops.
	bd95 := *bd
	bd95.Total, bd95.TopTuples = 26885, nil
	bd95.TCPState = map[string]int64{"TIME_WAIT": 26785, "ESTABLISHED": 100}
	bd95.L4 = map[string]int64{"tcp": 26885}
	bd95.Loopback = 26885
	bd95.TopServices = []analyze.ServiceCount{{Proto: "tcp", Port: 8080, Count: 26885, Loopback: 26885, TimeWait: 26785}}
	snap95 := *snap
	snap95.Settings.Count = 26885
	sc, err = Derive(&snap95, rep, &bd95)
	if err != nil {
		t.Fatal(err)
	}
	// (28,300 − 100 + 3 × √100) / 26,785 × (26,785 / 60 + 70 / 7) = 470.5 + 10.54
	if w := workloadByName(sc, "tcp-8080-lo"); w == nil || math.Abs(w.Rate.Value-28230.0/26785*(26785.0/60+10)) > 0.05 || !strings.Contains(sc.Description, "garbage collector") {
		t.Errorf("at 95%%: %+v, want rate 481.0 and the reason in:\n%s", w, sc.Description)
	}
	// A full table whose kernel has dropped nothing: the counts are the demand.
	rep.Stats = analyze.StatsInfo{Available: true}
	sc, err = Derive(snap, rep, bd)
	if err != nil {
		t.Fatal(err)
	}
	if w := workloadByName(sc, "tcp-8080-lo"); w.Rate.Value != 470 || !strings.Contains(sc.Description, "has dropped nothing") {
		t.Errorf("rate %v, want 470 unscaled, and the description to say why:\n%s", w.Rate.Value, sc.Description)
	}
	// Drops in the past and no rate now (one sample, or a burst that is
	// over): the room (with 3 × √100 to spare), and 5% more.
	rep.Stats = analyze.StatsInfo{Available: true, Drop: 500}
	if sc, err = Derive(snap, rep, bd); err != nil {
		t.Fatal(err)
	}
	if w := workloadByName(sc, "tcp-8080-lo"); math.Abs(w.Rate.Value-470*fill*1.05) > 0.05 || !strings.Contains(sc.Description, "has dropped 500 packets") {
		t.Errorf("rate %v, want 470 × %.5f × 1.05, and the description to say why:\n%s", w.Rate.Value, fill, sc.Description)
	}
}

// TestSynSentResidence: retransmitted SYNs (at 1, 3, 7, 15, 31, 63 s) do
// not renew the entry; one sent after it expired makes a new one.
func TestSynSentResidence(t *testing.T) {
	for _, c := range []struct {
		timeout float64
		retries int
		want    float64
	}{
		{120, 6, 120}, // all six inside the first 120 s
		{30, 6, 90},   // entries at 0–30, 31–61, 63–93
		{60, 6, 120},  // 0–60, 63–123
		{5, 2, 5},     // SYNs at 0, 1, 3
		{2, 3, 6},     // 0–2, 3–5, 7–9
	} {
		if got := synSentResidence(c.timeout, c.retries); got != c.want {
			t.Errorf("timeout %v, %d retries: %v s, want %v", c.timeout, c.retries, got, c.want)
		}
	}
}

// TestDeriveListingCount: the kernel's count, above a complete listing
// (it also holds expired entries its garbage collector has not reaped
// yet), changes nothing; a listing that broke off is scaled up to it.
func TestDeriveListingCount(t *testing.T) {
	snap := deriveHost()
	snap.Settings.Count = 22610 // 12.5% above the 20,100 listed
	rep := &analyze.Report{Listing: &analyze.Listing{Read: true}}
	sc, err := Derive(snap, rep, deriveBreakdown())
	if err != nil {
		t.Fatal(err)
	}
	if w := workloadByName(sc, "tcp-8080-lo"); w == nil || w.Rate.Value != 198 {
		t.Errorf("complete listing: %+v, want 11,880 / 60 = 198/s", w)
	}
	snap.Settings.Count = 40200
	rep.Listing = &analyze.Listing{Read: true, Reason: analyze.ListingFailed}
	if sc, err = Derive(snap, rep, deriveBreakdown()); err != nil {
		t.Fatal(err)
	}
	if w := workloadByName(sc, "tcp-8080-lo"); w == nil || w.Rate.Value != 396 || !strings.Contains(sc.Description, "broke off after 20,100 of the table's 40,200") {
		t.Errorf("half the table listed: %+v, want 2 × 198/s, and why in:\n%s", w, sc.Description)
	}
}

// TestDeriveOpenPools: open entries that could fill the table by
// themselves (Poisson arrivals vary by their square root) are opened three
// standard deviations short of the max; fewer are not touched.
func TestDeriveOpenPools(t *testing.T) {
	for _, c := range []struct {
		max, open int64
		want      float64
	}{
		{262144, 261844, 262144 - 3*math.Sqrt(261844)}, // 260,609
		{10000, 9700, 9700},                            // 9,700 + 3 × 98.5 fits
	} {
		snap := deriveHost()
		snap.Settings.Max, snap.Settings.Count = c.max, c.max
		bd := &analyze.Breakdown{Total: c.max, L4: map[string]int64{"tcp": c.max}, Loopback: c.max - c.open,
			TCPState:    map[string]int64{"TIME_WAIT": c.max - c.open, "ESTABLISHED": c.open},
			TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: 443, Count: c.open}, {Proto: "tcp", Port: 80, Count: c.max - c.open, Loopback: c.max - c.open, TimeWait: c.max - c.open}}}
		sc, err := Derive(snap, nil, bd)
		if err != nil {
			t.Fatal(err)
		}
		w := workloadByName(sc, "tcp-443-open")
		if w == nil || math.Abs(w.Rate.Value*DeriveOpenWindow.Seconds()-c.want) > 0.0005*c.want {
			t.Errorf("max %d, %d open: %+v, want %.0f opened", c.max, c.open, w, c.want)
		}
		if deflated := c.want < float64(c.open); deflated != strings.Contains(sc.Description, "three standard deviations short") {
			t.Errorf("max %d: the description must say so exactly when the open ones are cut:\n%s", c.max, sc.Description)
		}
	}
}

// TestDeriveUnrepliedEstablished: entries without a reply count as
// unanswered SYNs only up to the SYN_SENT count; the rest (ESTABLISHED
// entries picked up mid-stream or loaded with conntrack -I) are open.
func TestDeriveUnrepliedEstablished(t *testing.T) {
	bd := &analyze.Breakdown{Total: 1000, L4: map[string]int64{"tcp": 1000},
		TCPState:    map[string]int64{"SYN_SENT": 100, "ESTABLISHED": 900},
		Unreplied:   map[string]int64{"tcp": 300},
		TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: 443, Count: 1000, Unreplied: 300}}}
	sc, err := Derive(deriveHost(), nil, bd)
	if err != nil {
		t.Fatal(err)
	}
	syn, open := workloadByName(sc, "tcp-443"), workloadByName(sc, "tcp-443-open")
	if syn == nil || math.Abs(syn.Rate.Value-100.0/120) > 1e-3 || syn.Unanswered != 1 {
		t.Errorf("tcp-443: %+v, want the 100 SYN_SENT ÷ 120 s, all unanswered", syn)
	}
	if open == nil || open.Rate.Value != 90 {
		t.Errorf("tcp-443-open: %+v, want 900 open over 10 s", open)
	}
}

func TestDeriveErrors(t *testing.T) {
	if _, err := Derive(deriveHost(), nil, nil); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("no breakdown: %v", err)
	}
	if _, err := Derive(deriveHost(), nil, &analyze.Breakdown{}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty table: %v", err)
	}
	if _, err := Derive(nil, nil, deriveBreakdown()); err == nil {
		t.Error("no snapshot: no error")
	}
	// Only protocols the simulator has no workload for.
	bd := &analyze.Breakdown{Total: 5, L4: map[string]int64{"gre": 5}}
	if _, err := Derive(deriveHost(), nil, bd); err == nil || !strings.Contains(err.Error(), "no workload") {
		t.Errorf("nothing to simulate: %v", err)
	}
}

// roundTrip writes a scenario as YAML and parses it back.
func roundTrip(t *testing.T, sc *Scenario) *Scenario {
	t.Helper()
	data := sc.YAML()
	back, err := ParseScenario(sc.Name+".yaml", data)
	if err != nil {
		t.Fatalf("%s: its YAML does not parse: %v\n%s", sc.Name, err, data)
	}
	if !reflect.DeepEqual(back, sc) {
		t.Fatalf("%s: the YAML reads back differently:\n%+v\nwant\n%+v\n%s", sc.Name, back, sc, data)
	}
	return back
}

// TestScenarioYAMLRoundTrip: every built-in, a derived scenario and one
// with IPv6, NOTRACK rules on one hook and both, ranges and non-default
// fields read back to the same scenario.
func TestScenarioYAMLRoundTrip(t *testing.T) {
	for _, b := range Builtins() {
		sc, err := BuiltinScenario(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, sc)
	}
	sc, err := Derive(deriveHost(), nil, deriveBreakdown())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, sc)
	const odd = `name: odd
description: "a: colon, \"quotes\", 100%"
duration: 1d12h
step: 90s
seed: 18446744073709551615
settings: {nf_conntrack_max: 1024, net.netfilter.nf_conntrack_udp_timeout: 0}
notrack:
  - {iface: lo}
  - {hook: output, proto: udp, dst: "::1", dport: 53-55}
  - {hook: prerouting, src: 10.0.0.0/8, sport: 1}
workloads:
  - name: v6
    proto: tcp
    kind: keepalive
    rate: {from: 0.5, to: 1e3}
    start: 1m
    stop: 1h
    client: ["2001:db8::/64", "::1"]
    server: "::1"
    server_port: 8080-8083
    client_ports: 1024-2047
    iface: lo
    lifetime: {exponential: 1h}
    interval: 250us
    syn_retries: 0
    middlebox_idle_drop: 15m
  - name: "0"
    proto: icmp
    rate: {peak: 10, trough: 0, peak_at: "18:30:15"}
    client: 10.0.0.1
    server: 10.0.0.2
    host: router
    unanswered: 5%
`
	sc, err = ParseScenario("odd.yaml", []byte(odd))
	if err != nil {
		t.Fatal(err)
	}
	back := roundTrip(t, sc)
	if len(back.NoTrack) != 4 || back.NoTrack[0].Hook != engine.Prerouting || back.NoTrack[1].Hook != engine.Output {
		t.Errorf("notrack rules %+v", back.NoTrack)
	}
}

// TestDeriveFromSimulation: a simulated host's table, derived back,
// gives the rates the simulation ran (Little's law against the tracker's
// own timeouts, retransmissions and states) and a run that settles at the
// same count.
func TestDeriveFromSimulation(t *testing.T) {
	const src = `name: mix
duration: 6m
seed: 7
settings: {nf_conntrack_max: 65536, nf_conntrack_buckets: 16384, nf_conntrack_tcp_timeout_time_wait: 60}
workloads:
  - {name: upstream, proto: tcp, kind: short, rate: 120, client: 127.0.0.1, server: 127.0.0.1, server_port: 8080, iface: lo, lifetime: {exponential: 5ms}, closer: server}
  - {name: api, proto: tcp, kind: short, rate: 40, client: 10.1.0.0/16, server: 10.2.0.1, server_port: 9000, lifetime: {exponential: 20ms}, rtt: 2ms, unanswered: 5%}
  - {name: pool, proto: tcp, kind: keepalive, rate: 200, stop: 10s, client: 10.3.0.0/16, server: 10.2.0.2, server_port: 5432, lifetime: 1d, interval: 30s}
  - {name: dns, proto: udp, dns: true, rate: 60, client: 10.1.0.0/16, server: 10.2.0.53, unanswered: 10%}
  - {name: ping, proto: icmp, rate: 5, client: 10.1.0.0/16, server: 10.2.0.1}
`
	sc, err := ParseScenario("mix.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	snap := s.Snapshot(base)
	bd, err := Breakdown(s.Tracker(), snap, 10)
	if err != nil {
		t.Fatal(err)
	}
	der, err := Derive(snap, analyze.Analyze(snap, bd, base), bd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("derived:\n%s", der.YAML())
	// The rates the table shows, from one reading (Poisson arrivals: a
	// few percent of noise).
	for _, c := range []struct {
		name string
		rate float64
		tol  float64
	}{
		{"tcp-8080-lo", 120, 0.06},
		{"tcp-9000", 40, 0.1},
		{"udp-53", 60, 0.1},
		{"icmp", 5, 0.3},
	} {
		w := workloadByName(der, c.name)
		if w == nil {
			t.Errorf("no workload %s: %v", c.name, names(der))
			continue
		}
		if math.Abs(w.Rate.Value-c.rate) > c.tol*c.rate {
			t.Errorf("%s: derived rate %v, the simulation ran %v (±%.0f%%)", c.name, w.Rate.Value, c.rate, c.tol*100)
		}
	}
	if w := workloadByName(der, "tcp-9000"); w == nil || math.Abs(w.Unanswered-0.05) > 0.02 {
		t.Errorf("tcp-9000 unanswered share: %+v, want about 5%%", w)
	}
	if w := workloadByName(der, "tcp-5432-open"); w == nil || math.Abs(w.Rate.Value*DeriveOpenWindow.Seconds()-float64(res.Final.TCP[conntrack.TCPEstablished])) > 0.1*w.Rate.Value*10 {
		t.Errorf("tcp-5432-open: %+v, want the ~2,000 pooled connections held open", w)
	}
	again, err := Run(context.Background(), der, Options{})
	if err != nil {
		t.Fatal(err)
	}
	diff := float64(again.Steady.Total-res.Final.Total) / float64(res.Final.Total)
	t.Logf("simulated table at the reading %d entries; the derived scenario settles at %d (%+.1f%%)", res.Final.Total, again.Steady.Total, diff*100)
	if math.Abs(diff) > 0.05 {
		t.Errorf("derived scenario settles at %d entries, the table read had %d", again.Steady.Total, res.Final.Total)
	}
}

// FuzzDerive: whatever a snapshot archive says (counts negative, huge or
// inconsistent, odd timeouts, NaN rates), Derive returns an error or a
// valid scenario whose YAML reads back to it.
func FuzzDerive(f *testing.F) {
	f.Add(int64(20100), int64(12000), int64(11880), int64(366), int64(1500), int64(60), int64(65536), int64(60), uint16(8080), 70.0, int64(500))
	f.Add(int64(1), int64(1), int64(1), int64(0), int64(0), int64(0), int64(1), int64(0), uint16(0), 0.0, int64(0))
	f.Add(int64(262144), int64(261844), int64(0), int64(261844), int64(0), int64(0), int64(262144), int64(120), uint16(443), 0.0, int64(16))
	f.Add(int64(1)<<60, int64(1)<<60, int64(1)<<59, int64(0), int64(0), int64(0), int64(1)<<30, int64(120), uint16(80), 0.0, int64(0))
	f.Add(int64(100), int64(-50), int64(-1), int64(500), int64(-3), int64(7), int64(-1), int64(-5), uint16(53), math.NaN(), int64(-9))
	f.Add(int64(5000), int64(5000), int64(100), int64(0), int64(0), int64(0), int64(1)<<40, int64(0), uint16(22), math.Inf(1), int64(1))
	f.Fuzz(deriveOne)
}

// deriveOne checks one input of FuzzDerive.
func deriveOne(t *testing.T, total, svc, tw, unrepl, udp, icmp, maxv, twTimeout int64, port uint16, drop float64, dropped int64) {
	{
		snap := deriveHost()
		snap.Settings.Max, snap.Settings.Count = maxv, total
		snap.Settings.Timeouts = map[string]int64{"tcp_timeout_time_wait": twTimeout}
		bd := &analyze.Breakdown{Total: total, L4: map[string]int64{"tcp": svc + tw, "udp": udp, "icmp": icmp},
			TCPState:  map[string]int64{"TIME_WAIT": tw, "SYN_SENT": unrepl, "SYN_RECV": icmp},
			Unreplied: map[string]int64{"tcp": unrepl, "udp": udp / 2, "icmp": icmp},
			Loopback:  svc / 3,
			TopServices: []analyze.ServiceCount{{Proto: "tcp", Port: port, Count: svc, Loopback: svc / 3, TimeWait: tw, Unreplied: unrepl},
				{Proto: "udp", Port: port, Count: udp, Unreplied: udp / 2}},
			TopTuples: []analyze.TupleCount{{Src: "127.0.0.1", Dst: "127.0.0.1", Port: port, Count: svc, TimeWait: tw}}}
		rep := &analyze.Report{Table: analyze.TableInfo{Count: total, Max: maxv},
			Stats: analyze.StatsInfo{Available: true, Drop: uint64(max(dropped, 0)), Interval: 1,
				PerSecond: map[string]float64{"drop": drop, "early_drop": drop / 3}}}
		sc, err := Derive(snap, rep, bd)
		if err != nil {
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("derived scenario does not validate: %v", err)
		}
		back, err := ParseScenario("fuzz.yaml", sc.YAML())
		if err != nil {
			t.Fatalf("derived YAML does not parse: %v\n%s", err, sc.YAML())
		}
		if !reflect.DeepEqual(back, sc) {
			t.Fatalf("derived YAML reads back differently:\n%s", sc.YAML())
		}
	}
}
