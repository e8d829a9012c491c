package engine_test

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// A TCP handshake and close, with the verdict a `ct state` rule would see
// for each packet and the table at the end.
func Example() {
	clock := &engine.VirtualClock{}
	tr, err := engine.New(engine.Config{Clock: clock, Seed: 1})
	if err != nil {
		panic(err)
	}
	c, s := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.80")
	pkt := func(fromClient bool, flags engine.TCPFlags, seq, ack uint32) *engine.Packet {
		p := &engine.Packet{Proto: conntrack.TCP, Flags: flags, Seq: seq, Ack: ack, Window: 512,
			Src: c, Dst: s, SrcPort: 40000, DstPort: 80}
		if !fromClient {
			p.Src, p.Dst, p.SrcPort, p.DstPort = s, c, 80, 40000
		}
		return p
	}
	for _, p := range []*engine.Packet{
		pkt(true, engine.SYN, 100, 0),
		pkt(false, engine.SYN|engine.ACK, 500, 101),
		pkt(true, engine.ACK, 101, 501),
		pkt(true, engine.FIN|engine.ACK, 101, 501),
		pkt(false, engine.FIN|engine.ACK, 501, 102),
		pkt(true, engine.ACK, 102, 502),
	} {
		v := tr.Process(p)
		fmt.Printf("%-17v %-11v %ds\n", v.CtInfo, conntrack.TCPState(v.State), v.Timeout)
		clock.Advance(10 * time.Millisecond)
	}
	clock.Advance(time.Second)
	_ = tr.WriteProc(os.Stdout)
	// Output:
	// NEW               SYN_SENT    120s
	// ESTABLISHED,REPLY SYN_RECV    60s
	// ESTABLISHED       ESTABLISHED 432000s
	// ESTABLISHED       FIN_WAIT    120s
	// ESTABLISHED,REPLY LAST_ACK    30s
	// ESTABLISHED       TIME_WAIT   120s
	// ipv4     2 tcp      6 118 TIME_WAIT src=192.0.2.1 dst=192.0.2.80 sport=40000 dport=80 src=192.0.2.80 dst=192.0.2.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=1
}

// A table that fills up: with 4 slots and only unanswered SYNs, early drop
// makes room; the counters use the kernel's names.
func ExampleTracker_TotalStats() {
	clock := &engine.VirtualClock{}
	tr, _ := engine.New(engine.Config{Clock: clock, Seed: 1,
		Settings: map[string]int64{"net.netfilter.nf_conntrack_max": 4, "net.netfilter.nf_conntrack_buckets": 4}})
	for i := range 10 {
		tr.Process(&engine.Packet{Proto: conntrack.TCP, Flags: engine.SYN,
			Src: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Dst: netip.MustParseAddr("10.0.0.200"),
			SrcPort: 1234, DstPort: 80})
	}
	st := tr.TotalStats()
	fmt.Println("count", tr.Count(), "drop", st.Values[conntrack.StatDrop], "early_drop>0", st.Values[conntrack.StatEarlyDrop] > 0)
	// Output: count 2 drop 0 early_drop>0 true
}
