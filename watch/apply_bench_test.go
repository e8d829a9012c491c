package watch

import (
	"net/netip"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// BenchmarkApplyEvents is the cost of the events of one short TCP
// connection (new, three updates, destroy) applied to a table of 250,000
// entries with a distinct source each.
func BenchmarkApplyEvents(b *testing.B) {
	o, _ := Options{}.withDefaults()
	n := &nsWatch{opt: o, tab: newTable(250000)}
	for i := range 250000 {
		f := conntrack.Flow{ID: uint32(i + 1<<20), Proto: conntrack.TCP, State: uint8(conntrack.TCPEstablished),
			Orig: conntrack.Tuple{Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("10.200.0.1"), DstPort: 443}}
		n.tab.put(f.ID, entryOf(&f), true)
	}
	ev := &ctnetlink.Event{HasState: true}
	ev.Flow = conntrack.Flow{Proto: conntrack.TCP,
		Orig: conntrack.Tuple{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: 40000, DstPort: 80}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.Flow.ID = uint32(i)
		for _, st := range []conntrack.TCPState{conntrack.TCPSynSent, conntrack.TCPSynRecv, conntrack.TCPEstablished, conntrack.TCPTimeWait} {
			ev.Type, ev.Flow.State = ctnetlink.EventUpdate, uint8(st)
			if st == conntrack.TCPSynSent {
				ev.Type = ctnetlink.EventNew
			}
			n.apply(ev)
		}
		ev.Type = ctnetlink.EventDestroy
		n.apply(ev)
	}
}

// BenchmarkListing250k is the watcher's own cost of a listing of 250,000
// entries with a distinct source each, all already in the table (the
// steady state, in events mode): per entry, the ID, the key and the
// generation mark.
func BenchmarkListing250k(b *testing.B) {
	o, _ := Options{}.withDefaults()
	n := &nsWatch{opt: o, tab: newTable(250000), subscribed: true}
	flows := make([]conntrack.Flow, 250000)
	for i := range flows {
		flows[i] = conntrack.Flow{ID: uint32(i + 1<<20), Proto: conntrack.TCP, State: uint8(conntrack.TCPEstablished),
			Orig: conntrack.Tuple{Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("10.200.0.1"), DstPort: 443}}
		n.tab.put(flows[i].ID, entryOf(&flows[i]), true)
	}
	b.ReportAllocs()
	for b.Loop() {
		n.mu.Lock()
		n.tab.begin()
		n.mu.Unlock()
		for i := range flows {
			f := &flows[i]
			id, e := flowID(f), entryOf(f)
			n.mu.Lock()
			n.listedFlow(id, e, f)
			n.mu.Unlock()
		}
		n.mu.Lock()
		n.tab.sweep()
		n.mu.Unlock()
	}
}
