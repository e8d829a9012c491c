package engine

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

const benchFlows = 1 << 20

// benchConns returns n distinct client→server TCP tuples, as a busy host
// has them: many clients, a few servers and ports.
func benchConns(n int) []*conv {
	out := make([]*conv, n)
	for i := range out {
		c := newConv(uint16(1024 + i%60000))
		c.cli = netip.AddrFrom4([4]byte{10, byte(i >> 22), byte(i >> 14), byte(i >> 6)})
		c.srv = netip.AddrFrom4([4]byte{192, 168, 0, byte(i % 7)})
		out[i] = c
	}
	return out
}

// fill tracks n established, ASSURED connections.
func fill(tb testing.TB, tr *Tracker, conns []*conv) {
	for _, c := range conns {
		tr.Process(c.pkt(Original, SYN, 0))
		tr.Process(c.pkt(Reply, SYN|ACK, 0))
		if v := tr.Process(c.pkt(Original, ACK, 0)); v.Drop || v.CtInfo != conntrack.CtEstablished {
			tb.Fatalf("fill: %+v", v)
		}
	}
}

func benchTracker(tb testing.TB) *Tracker {
	vc := &VirtualClock{}
	tr, err := New(Config{Clock: vc, Seed: 42, ChainLimit: -1,
		Settings: map[string]int64{SetMax: 2 * benchFlows, SetBuckets: benchFlows}})
	if err != nil {
		tb.Fatal(err)
	}
	return tr
}

// benchPackets returns data packets of random tracked connections, in
// both directions.
func benchPackets(conns []*conv) []*Packet {
	r := rand.New(rand.NewPCG(1, 2))
	pk := make([]*Packet, 1<<16)
	for i := range pk {
		c := conns[r.IntN(len(conns))]
		dir := Direction(i & 1)
		p := c.pkt(dir, ACK, 0)
		pk[i] = p
	}
	return pk
}

// BenchmarkProcess1M is the engine's per-packet cost (lookup, TCP state
// update, timeout refresh, locking) with 1M tracked connections.
func BenchmarkProcess1M(b *testing.B) {
	tr := benchTracker(b)
	conns := benchConns(benchFlows)
	fill(b, tr, conns)
	pk := benchPackets(conns)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Process(pk[i&(len(pk)-1)])
	}
}

// BenchmarkMapLookup1M is the anchor: a bare Go map lookup of the same
// tuples (built from the same packets) in a map of 1M connections.
func BenchmarkMapLookup1M(b *testing.B) {
	conns := benchConns(benchFlows)
	m := make(map[key]uint32, benchFlows)
	for i, c := range conns {
		var k key
		makeKey(&k, c.pkt(Original, SYN, 0))
		m[k] = uint32(i)
	}
	pk := benchPackets(conns)
	b.ResetTimer()
	var sink uint32
	for i := 0; i < b.N; i++ {
		p := pk[i&(len(pk)-1)]
		var k key
		makeKey(&k, p)
		if p.Src == p.Dst { // never: keeps the compiler from hoisting
			k.zone++
		}
		sink += m[k]
	}
	_ = sink
}

// BenchmarkMemoryPerFlow reports the heap the tracker holds per tracked
// connection after 1M connections, including buckets and the expiry wheel.
func BenchmarkMemoryPerFlow(b *testing.B) {
	conns := benchConns(benchFlows)
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		vc := &VirtualClock{}
		tr, err := New(Config{Clock: vc, Seed: 42, ChainLimit: -1,
			Settings: map[string]int64{SetMax: benchFlows, SetBuckets: benchFlows}})
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range conns {
			c.seq = [2]uint32{1000, 5000}
		}
		fill(b, tr, conns)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(tr.Count()), "B/flow")
		runtime.KeepAlive(tr)
	}
}
