package analyze

import (
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// BenchmarkTupleSummary is the per-tuple counting part of
// BenchmarkAccumulatorAdd on its own (the same flows: 30% from 10 heavy
// sources, a long tail of distinct ones).
func BenchmarkTupleSummary(b *testing.B) {
	flows := benchFlows(250000)
	s := newTupleSummary()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := &flows[i%len(flows)]
		s.add(tupleKey{src: f.Orig.Src.As16(), dst: f.Orig.Dst.As16(), port: f.Orig.DstPort}, f.State == uint8(conntrack.TCPTimeWait))
	}
}
