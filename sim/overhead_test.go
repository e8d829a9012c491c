package sim

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// nullTracker accepts every packet and tracks nothing: it isolates the
// simulator's own cost per packet.
type nullTracker struct{ n int }

func (t *nullTracker) Process(*engine.Packet) engine.Verdict { t.n++; return engine.Verdict{} }
func (t *nullTracker) Count() int                            { return 0 }
func (t *nullTracker) Counts() engine.Counts                 { return engine.Counts{} }
func (t *nullTracker) TotalStats() conntrack.Stats           { return conntrack.Stats{} }

func shortScenario(rate float64, d time.Duration) *Scenario {
	return &Scenario{Name: "short", Duration: d, Seed: 1,
		Workloads: []Workload{{Name: "upstream", Proto: conntrack.TCP, Rate: Rate{Value: rate},
			Clients: []netip.Prefix{mustPrefix("127.0.0.1")}, Servers: []netip.Prefix{mustPrefix("127.0.0.1")},
			ServerPorts: engine.PortRange{Lo: 8080, Hi: 8087}, Iface: "lo", Lifetime: Dist{Mean: 2 * time.Millisecond, Exponential: true}}}}
}

// BenchmarkGeneratorOverhead measures the simulator's cost per packet with
// a tracker that does nothing (the engine's own cost comes on top).
func BenchmarkGeneratorOverhead(b *testing.B) {
	for b.Loop() {
		sc := shortScenario(10000, time.Minute)
		if err := sc.Validate(); err != nil {
			b.Fatal(err)
		}
		nt := &nullTracker{}
		s := newSimulator(sc, Options{}, nt, &engine.VirtualClock{})
		start := time.Now()
		if _, err := s.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(nt.n), "ns/packet")
		b.ReportMetric(float64(nt.n), "packets")
	}
}

func mustPrefix(s string) netip.Prefix {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}
