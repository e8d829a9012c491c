package sim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// TestEstimateArithmetic checks the estimate against counts worked out by
// hand from the scenario's numbers.
func TestEstimateArithmetic(t *testing.T) {
	for _, tc := range []struct {
		name          string
		yaml          string
		conns, packet float64
	}{
		// 100/s for 60 s; a short TCP connection is 8 segments.
		{"short", `{name: a, rate: 100, client: 10.0.0.1, server: 10.0.0.2, server_port: 80}`, 6000, 48000},
		// A ramp 0 → 200/s over its 30 s window (start 10s, stop 40s): 3,000.
		{"ramp", `{name: a, rate: {from: 0, to: 200}, start: 10s, stop: 40s, client: 10.0.0.1, server: 10.0.0.2, server_port: 80}`, 3000, 24000},
		// Half the SYNs unanswered, sent 1 + 2 times: 3,000 × 3 + 3,000 × 8.
		{"unanswered", `{name: a, rate: 100, unanswered: 0.5, syn_retries: 2, client: 10.0.0.1, server: 10.0.0.2, server_port: 80}`, 6000, 33000},
		// A SYN flood: one SYN and one SYN/ACK each.
		{"flood", `{name: a, rate: 1000, syn_flood: true, client: 10.0.0.0/8, server: 10.0.0.2, server_port: 80}`, 60000, 120000},
		// DNS: a query and an answer; 10% unanswered send only the query.
		{"dns", `{name: a, proto: udp, dns: true, rate: 50, unanswered: 0.1, client: 10.0.0.1, server: 10.0.0.2}`, 3000, 5700},
	} {
		sc, err := ParseScenario(tc.name+".yaml", []byte("name: x\nduration: 60s\nworkloads:\n  - "+tc.yaml+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		e := sc.Estimate()
		if math.Abs(e.Connections-tc.conns) > 1e-6*tc.conns || math.Abs(e.Packets-tc.packet) > 1e-6*tc.packet {
			t.Errorf("%s: %.1f connections, %.1f packets; want %.0f and %.0f", tc.name, e.Connections, e.Packets, tc.conns, tc.packet)
		}
	}
	// A whole day of a daily curve averages (peak + trough) / 2.
	sc, err := ParseScenario("day.yaml", []byte("name: x\nduration: 24h\nworkloads:\n  - {name: a, rate: {peak: 90, trough: 10, peak_at: \"20:00\"}, client: 10.0.0.1, server: 10.0.0.2, server_port: 80}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e := sc.Estimate(); math.Abs(e.Connections-50*86400) > 1 {
		t.Errorf("daily: %.1f connections, want %d", e.Connections, 50*86400)
	}
	// The wall time at the documented speed.
	if w := (Estimate{Packets: 3 * PacketsPerSecond}).Wall(); w != 3*time.Second {
		t.Errorf("wall %s", w)
	}
	// An absurd scenario (a billion connections/s for a year: 1.3e20 ns)
	// saturates instead of wrapping negative.
	sc, err = ParseScenario("absurd.yaml", []byte("name: x\nduration: 365d\nworkloads:\n  - {name: a, rate: 1000000000, client: 10.0.0.1, server: 10.0.0.2, server_port: 80}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := sc.Estimate().Wall(); w != math.MaxInt64 {
		t.Errorf("absurd: wall %d", w)
	}
}

// TestEstimateMatchesRun compares the estimate with the packets small runs
// really send: the built-ins and workloads of every kind, on a table
// large enough that nothing is dropped (drops add retransmissions the
// estimate leaves out).
func TestEstimateMatchesRun(t *testing.T) {
	var scs []*Scenario
	for _, b := range Builtins() {
		sc, err := Load(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		sc.Duration, sc.Step = 2*time.Minute, 0
		scs = append(scs, sc)
	}
	for _, y := range []string{
		// keepalive UDP, fixed intervals and lifetimes, client closes
		`{name: a, proto: udp, kind: keepalive, rate: 200, lifetime: 30s, interval: 2s, client: 10.0.0.0/16, server: 10.0.0.2, server_port: 9000}`,
		`{name: a, proto: icmp, kind: keepalive, rate: 200, lifetime: {exponential: 10s}, interval: 1s, unanswered: 0.2, client: 10.0.0.0/16, server: 10.0.0.2}`,
		`{name: a, kind: keepalive, rate: 300, lifetime: 40s, interval: 3s, closer: client, rtt: 20ms, client: 10.0.0.0/16, server: 10.0.0.2, server_port: 80}`,
		// a middlebox forgetting connections idle for 4 s, exponential and fixed gaps
		`{name: a, kind: keepalive, rate: 300, lifetime: {exponential: 60s}, interval: {exponential: 3s}, middlebox_idle_drop: 4s, client: 10.0.0.0/16, server: 10.0.0.2, server_port: 80}`,
		`{name: a, kind: keepalive, rate: 300, lifetime: 60s, interval: 5s, middlebox_idle_drop: 4s, client: 10.0.0.0/16, server: 10.0.0.2, server_port: 80}`,
		// a ramp and unanswered SYNs
		`{name: a, rate: {from: 100, to: 900}, unanswered: 0.1, client: 10.0.0.0/16, server: 10.0.0.2, server_port: 80}`,
	} {
		sc, err := ParseScenario("custom.yaml", []byte("name: custom\nduration: 2m\nworkloads:\n  - "+y+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		scs = append(scs, sc)
	}
	for _, sc := range scs {
		sc.Apply(map[string]int64{"nf_conntrack_max": 1 << 22})
		if err := sc.Validate(); err != nil {
			t.Fatal(err)
		}
		e := sc.Estimate()
		r, err := Run(context.Background(), sc, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.DroppedPackets != 0 {
			t.Fatalf("%s: %d drops", sc.Name, r.DroppedPackets)
		}
		// Arrivals are random: within a few percent.
		d := e.Packets/float64(r.Packets) - 1
		if math.Abs(d) > 0.05 {
			t.Errorf("%s %s: estimate %.0f packets, the run sent %d (%+.1f%%)", sc.Name, sc.Workloads[0].Describe(), e.Packets, r.Packets, d*100)
		}
		t.Logf("%s: estimate %.0f packets, the run sent %d (%+.1f%%)", sc.Name, e.Packets, r.Packets, d*100)
		if d := e.Connections/float64(r.Connections) - 1; math.Abs(d) > 0.05 {
			t.Errorf("%s: estimate %.0f connections, the run opened %d (%+.1f%%)", sc.Name, e.Connections, r.Connections, d*100)
		}
	}
}

// TestProgressAtHighRates: at a hundred million connections per second one
// millisecond tick holds a hundred thousand of them; the run must still
// report progress and stop when cancelled, within a few tens of thousands
// of packets (it checked only every 4,096 ticks: seconds of virtual time).
func TestProgressAtHighRates(t *testing.T) {
	sc, err := ParseScenario("fast.yaml", []byte(`name: fast
duration: 1s
workloads:
  - {name: a, rate: 100M, client: 10.0.0.0/8, server: 10.1.0.0/16, server_port: 80-90}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls int
	var seen uint64
	_, err = Run(ctx, sc, Options{Progress: func(now time.Duration, packets uint64) {
		calls++
		seen = packets
		if now < 0 || now > sc.Duration {
			t.Errorf("progress at %s", now)
		}
		cancel()
	}})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d progress calls", err, calls)
	}
	if seen == 0 || seen > 1<<22 {
		t.Errorf("first progress after %d packets", seen)
	}
}

func TestApprox(t *testing.T) {
	for x, want := range map[float64]string{950: "950", 12345: "12 thousand", 1e6: "1 million", 4.8e6: "4.8 million",
		4.8e10: "48 billion", 250e3: "250 thousand", 3e12: "3 trillion"} {
		if got := Approx(x); got != want {
			t.Errorf("Approx(%g) = %q, want %q", x, got, want)
		}
	}
}
