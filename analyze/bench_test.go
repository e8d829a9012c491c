package analyze

import (
	"net/netip"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// benchFlows builds n distinct flows with a genflows-like skew: a few heavy
// sources and a long tail.
func benchFlows(n int) []conntrack.Flow {
	out := make([]conntrack.Flow, n)
	for i := range out {
		src := netip.AddrFrom4([4]byte{10, byte(2 + i%39), byte(i >> 8), byte(i)})
		if i%10 < 3 {
			src = netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i%10)})
		}
		dst := netip.AddrFrom4([4]byte{10, 200, 0, byte(1 + i%4)})
		out[i] = conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.TCP, Timeout: uint32(3600 + i%400000),
			State: uint8(conntrack.TCPTimeWait), Status: conntrack.StatusAssured | conntrack.StatusSeenReply,
			Orig:  conntrack.Tuple{Src: src, Dst: dst, SrcPort: uint16(1024 + i), DstPort: 443},
			Reply: conntrack.Tuple{Src: dst, Dst: src, SrcPort: 443, DstPort: uint16(1024 + i)}}
	}
	return out
}

// BenchmarkAccumulatorAdd is the per-entry analysis cost (it runs on the
// decoding goroutine, beside the kernel's dump on the other core).
func BenchmarkAccumulatorAdd(b *testing.B) {
	flows := benchFlows(250000)
	acc := NewAccumulator()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		acc.Add(&flows[i%len(flows)])
	}
}

// BenchmarkMapCount is the anchor: one bare map increment per entry.
func BenchmarkMapCount(b *testing.B) {
	flows := benchFlows(250000)
	m := map[netip.Addr]int{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m[flows[i%len(flows)].Orig.Src]++
	}
}

func BenchmarkParseProcLine(b *testing.B) {
	line := []byte("ipv4     2 tcp      6 431999 ESTABLISHED src=10.6.130.31 dst=10.200.0.4 sport=31973 dport=8080 src=10.200.0.4 dst=10.6.130.31 sport=8080 dport=31973 [ASSURED] mark=0 zone=0 use=2")
	var f conntrack.Flow
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := conntrack.ParseLine(line, &f); err != nil {
			b.Fatal(err)
		}
	}
}
