package engine

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

var (
	cli = netip.MustParseAddr("10.0.1.2")
	srv = netip.MustParseAddr("10.0.2.2")
)

func newT(t testing.TB, settings map[string]int64) (*Tracker, *VirtualClock) {
	t.Helper()
	vc := &VirtualClock{}
	vc.Set(1000 * time.Second)
	tr, err := New(Config{Clock: vc, Seed: 1, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	return tr, vc
}

// conv crafts a TCP conversation between cli:sport and srv:80 with
// consistent sequence numbers.
type conv struct {
	sport    uint16
	seq      [2]uint32
	cli, srv netip.Addr
}

func newConv(sport uint16) *conv {
	return &conv{sport: sport, seq: [2]uint32{1000, 5000}, cli: cli, srv: srv}
}

func (c *conv) pkt(dir Direction, f TCPFlags, data int) *Packet {
	p := &Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Flags: f, PayloadLen: data, Window: 1000}
	if dir == Original {
		p.Src, p.Dst, p.SrcPort, p.DstPort = c.cli, c.srv, c.sport, 80
	} else {
		p.Src, p.Dst, p.SrcPort, p.DstPort = c.srv, c.cli, 80, c.sport
	}
	p.Seq = c.seq[dir]
	if f&ACK != 0 {
		p.Ack = c.seq[1-dir]
	}
	c.seq[dir] += uint32(data)
	if f&(SYN|FIN) != 0 {
		c.seq[dir]++
	}
	return p
}

type step struct {
	dir     Direction
	flags   TCPFlags
	data    int
	ctinfo  conntrack.CtInfo
	state   conntrack.TCPState // expected state after; TCPNone = no entry
	status  conntrack.Status   // SeenReply/Assured expected
	timeout uint32
}

func runSteps(t *testing.T, tr *Tracker, c *conv, steps []step) {
	t.Helper()
	for i, s := range steps {
		p := c.pkt(s.dir, s.flags, s.data)
		v := tr.Process(p)
		if v.CtInfo != s.ctinfo {
			t.Errorf("step %d (%v %s): ctinfo %v, want %v (%s)", i, s.dir, flagString(s.flags), v.CtInfo, s.ctinfo, v.Reason)
		}
		var f conntrack.Flow
		_, ok := tr.Lookup(&Packet{Proto: conntrack.TCP, Src: c.cli, Dst: c.srv, SrcPort: c.sport, DstPort: 80}, &f)
		if s.state == conntrack.TCPNone {
			if ok {
				t.Errorf("step %d: entry %s present, want none", i, &f)
			}
			continue
		}
		if !ok {
			t.Errorf("step %d (%v %s): no entry, want %v", i, s.dir, flagString(s.flags), s.state)
			continue
		}
		if f.TCPState() != s.state {
			t.Errorf("step %d (%v %s): state %v, want %v", i, s.dir, flagString(s.flags), f.TCPState(), s.state)
		}
		got := f.Status & (conntrack.StatusSeenReply | conntrack.StatusAssured)
		if got != s.status {
			t.Errorf("step %d: status %v, want %v", i, got, s.status)
		}
		if s.timeout != 0 && f.Timeout+1 != s.timeout && f.Timeout != s.timeout {
			t.Errorf("step %d: timeout %d, want %d", i, f.Timeout, s.timeout)
		}
	}
}

func flagString(f TCPFlags) string {
	var b []string
	for i, n := range []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"} {
		if f&(1<<i) != 0 {
			b = append(b, n)
		}
	}
	return strings.Join(b, "|")
}

const (
	sr = conntrack.StatusSeenReply
	as = conntrack.StatusAssured | conntrack.StatusSeenReply
)

func TestTCPHandshakeAndClientClose(t *testing.T) {
	tr, _ := newT(t, nil)
	runSteps(t, tr, newConv(40000), []step{
		{Original, SYN, 0, conntrack.CtNew, conntrack.TCPSynSent, 0, 120},
		{Reply, SYN | ACK, 0, conntrack.CtEstablishedReply, conntrack.TCPSynRecv, sr, 60},
		{Original, ACK, 0, conntrack.CtEstablished, conntrack.TCPEstablished, as, 432000},
		{Original, ACK | PSH, 100, conntrack.CtEstablished, conntrack.TCPEstablished, as, 300}, // data not yet acknowledged
		{Reply, ACK | PSH, 200, conntrack.CtEstablishedReply, conntrack.TCPEstablished, as, 300},
		{Original, ACK, 0, conntrack.CtEstablished, conntrack.TCPEstablished, as, 432000},
		{Original, FIN | ACK, 0, conntrack.CtEstablished, conntrack.TCPFinWait, as, 120},
		{Reply, ACK, 0, conntrack.CtEstablishedReply, conntrack.TCPCloseWait, as, 60},
		{Reply, FIN | ACK, 0, conntrack.CtEstablishedReply, conntrack.TCPLastAck, as, 30},
		{Original, ACK, 0, conntrack.CtEstablished, conntrack.TCPTimeWait, as, 120},
	})
}

func TestTCPRefusedLeavesNoEntry(t *testing.T) {
	tr, _ := newT(t, nil)
	runSteps(t, tr, newConv(40001), []step{
		{Original, SYN, 0, conntrack.CtNew, conntrack.TCPSynSent, 0, 120},
		{Reply, RST | ACK, 0, conntrack.CtEstablishedReply, conntrack.TCPNone, 0, 0},
	})
	if n := tr.Count(); n != 0 {
		t.Fatalf("count %d after a refused connect, want 0", n)
	}
}

func TestTCPReopenFromTimeWait(t *testing.T) {
	tr, vc := newT(t, nil)
	c := newConv(40002)
	for _, s := range [][2]any{{Original, SYN}, {Reply, SYN | ACK}, {Original, ACK}, {Reply, FIN | ACK}, {Original, FIN | ACK}, {Reply, ACK}} {
		tr.Process(c.pkt(s[0].(Direction), s[1].(TCPFlags), 0))
	}
	vc.Advance(5 * time.Second)
	c.seq = [2]uint32{90000, 7000}
	runSteps(t, tr, c, []step{
		{Original, SYN, 0, conntrack.CtNew, conntrack.TCPSynSent, 0, 120},
	})
	if n := tr.Count(); n != 1 {
		t.Fatalf("count %d after reopen, want 1", n)
	}
}

func TestTCPInvalid(t *testing.T) {
	tr, _ := newT(t, nil)
	c := newConv(40003)
	if v := tr.Process(c.pkt(Original, SYN|FIN, 0)); v.CtInfo != conntrack.CtInvalid {
		t.Errorf("SYN|FIN: %v, want INVALID", v.CtInfo)
	}
	if v := tr.Process(c.pkt(Original, SYN|ACK, 0)); v.CtInfo != conntrack.CtInvalid {
		t.Errorf("SYN/ACK without entry: %v, want INVALID", v.CtInfo)
	}
	if tr.Count() != 0 {
		t.Fatal("invalid packets created entries")
	}
	if s := tr.TotalStats(); s.Values[conntrack.StatInvalid] != 2 {
		t.Errorf("invalid counter %d, want 2", s.Values[conntrack.StatInvalid])
	}
}

func TestTCPPickupAndLooseOff(t *testing.T) {
	tr, _ := newT(t, nil)
	runSteps(t, tr, newConv(40004), []step{
		{Original, ACK, 10, conntrack.CtNew, conntrack.TCPEstablished, 0, 300},
		{Reply, ACK, 0, conntrack.CtEstablishedReply, conntrack.TCPEstablished, sr, 300},
		{Original, ACK, 0, conntrack.CtEstablished, conntrack.TCPEstablished, as, 432000},
	})
	tr2, _ := newT(t, map[string]int64{"net.netfilter.nf_conntrack_tcp_loose": 0})
	if v := tr2.Process(newConv(1).pkt(Original, ACK, 0)); v.CtInfo != conntrack.CtInvalid {
		t.Errorf("pickup with tcp_loose=0: %v, want INVALID", v.CtInfo)
	}
}

func TestUDPStream(t *testing.T) {
	tr, vc := newT(t, nil)
	req := &Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 5353, DstPort: 53}
	rep := &Packet{Proto: conntrack.UDP, Src: srv, Dst: cli, SrcPort: 53, DstPort: 5353}
	check := func(p *Packet, ct conntrack.CtInfo, st conntrack.Status, tmo uint32) {
		t.Helper()
		v := tr.Process(p)
		if v.CtInfo != ct || v.Status&(sr|as) != st || v.Timeout != tmo {
			t.Errorf("got %v %v %d, want %v %v %d", v.CtInfo, v.Status, v.Timeout, ct, st, tmo)
		}
	}
	check(req, conntrack.CtNew, 0, 30)
	vc.Advance(500 * time.Millisecond)
	check(rep, conntrack.CtEstablishedReply, sr, 30)
	vc.Advance(time.Second)
	check(req, conntrack.CtEstablished, sr, 30) // within 2 s of creation
	vc.Advance(time.Second)
	check(req, conntrack.CtEstablished, as, 120)
}

func TestICMPEchoAndError(t *testing.T) {
	tr, _ := newT(t, nil)
	echo := &Packet{Proto: conntrack.ICMP, Src: cli, Dst: srv, ICMPType: 8, ICMPID: 77}
	reply := &Packet{Proto: conntrack.ICMP, Src: srv, Dst: cli, ICMPType: 0, ICMPID: 77}
	if v := tr.Process(reply); v.CtInfo != conntrack.CtInvalid {
		t.Errorf("echo reply first: %v, want INVALID", v.CtInfo)
	}
	if v := tr.Process(echo); v.CtInfo != conntrack.CtNew || v.Timeout != 30 {
		t.Errorf("echo: %v %d", v.CtInfo, v.Timeout)
	}
	if v := tr.Process(reply); v.CtInfo != conntrack.CtEstablishedReply {
		t.Errorf("echo reply: %v", v.CtInfo)
	}
	udp := &Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 4000, DstPort: 9}
	tr.Process(udp)
	unreach := &Packet{Proto: conntrack.ICMP, Src: srv, Dst: cli, ICMPType: 3, ICMPCode: 3, HasEmbedded: true,
		Embedded: Embedded{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 4000, DstPort: 9}}
	if v := tr.Process(unreach); v.CtInfo != conntrack.CtRelatedReply {
		t.Errorf("port unreachable: %v, want RELATED,REPLY", v.CtInfo)
	}
	unreach.Embedded.SrcPort = 4001
	if v := tr.Process(unreach); v.CtInfo != conntrack.CtInvalid {
		t.Errorf("unmatched error: %v, want INVALID", v.CtInfo)
	}
	if s := tr.TotalStats(); s.Values[conntrack.StatError] != 1 {
		t.Errorf("error counter %d, want 1", s.Values[conntrack.StatError])
	}
	if n := tr.Count(); n != 2 {
		t.Errorf("count %d, want 2 (icmp echo, udp)", n)
	}
}

func TestExpiry(t *testing.T) {
	tr, vc := newT(t, nil)
	tr.Process(&Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 1, DstPort: 2})
	vc.Advance(29 * time.Second)
	if tr.Count() != 1 {
		t.Fatal("entry gone before its 30 s timeout")
	}
	// reaped within one wheel tick (1.07 s) of expiring
	vc.Advance(2100 * time.Millisecond)
	if c := tr.Counts(); c.Total != 0 || c.UDP != 0 || c.Unreplied != 0 {
		t.Fatalf("after 31.1 s: %+v, want empty", c)
	}
}

func synFrom(i int) *Packet {
	return &Packet{Proto: conntrack.TCP, Flags: SYN, Src: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), Dst: srv, SrcPort: uint16(1024 + i), DstPort: 80, Seq: uint32(i)}
}

func TestTableFullEarlyDrop(t *testing.T) {
	tr, _ := newT(t, map[string]int64{SetMax: 64, SetBuckets: 64})
	for i := range 64 {
		if v := tr.Process(synFrom(i)); v.Drop {
			t.Fatalf("packet %d dropped below max", i)
		}
	}
	v := tr.Process(synFrom(1000))
	if v.Drop || !v.Created {
		t.Fatalf("new SYN at max with unassured entries: %+v, want created after early drop", v)
	}
	s := tr.TotalStats()
	if s.Values[conntrack.StatEarlyDrop] == 0 || s.Values[conntrack.StatDrop] != 0 {
		t.Fatalf("stats early_drop=%d drop=%d", s.Values[conntrack.StatEarlyDrop], s.Values[conntrack.StatDrop])
	}
	if tr.Count() > 64 {
		t.Fatalf("count %d above max", tr.Count())
	}
}

func TestTableFullAssuredDrops(t *testing.T) {
	tr, _ := newT(t, map[string]int64{SetMax: 32, SetBuckets: 32})
	for i := range 32 {
		c := newConv(uint16(2000 + i))
		tr.Process(c.pkt(Original, SYN, 0))
		tr.Process(c.pkt(Reply, SYN|ACK, 0))
		tr.Process(c.pkt(Original, ACK, 0))
	}
	if c := tr.Counts(); c.Assured != 32 {
		t.Fatalf("assured %d, want 32", c.Assured)
	}
	v := tr.Process(synFrom(5))
	if !v.Drop || v.Reason != "table full" {
		t.Fatalf("SYN into a table full of ASSURED entries: %+v, want dropped", v)
	}
	if s := tr.TotalStats(); s.Values[conntrack.StatDrop] != 1 {
		t.Fatalf("drop counter %d, want 1", s.Values[conntrack.StatDrop])
	}
}

func TestChainTooLong(t *testing.T) {
	vc := &VirtualClock{}
	tr, err := New(Config{Clock: vc, Seed: 3, ChainLimit: 2, Settings: map[string]int64{SetBuckets: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// one bucket: each entry adds two nodes to the only chain
	for i := range 5 {
		tr.Process(synFrom(i))
	}
	s := tr.TotalStats()
	if tr.Count() != 2 || s.Values[conntrack.StatChainTooLong] != 3 || s.Values[conntrack.StatInsertFailed] != 3 {
		t.Fatalf("count %d chaintoolong %d insert_failed %d; want 2, 3, 3", tr.Count(), s.Values[conntrack.StatChainTooLong], s.Values[conntrack.StatInsertFailed])
	}
}

func TestNoTrack(t *testing.T) {
	vc := &VirtualClock{}
	lo := netip.MustParseAddr("127.0.0.1")
	tr, _ := New(Config{Clock: vc, NoTrack: []NoTrackRule{{Hook: Output, Iface: "lo"}, {Hook: Prerouting, Iface: "lo"}}})
	v := tr.Process(&Packet{Proto: conntrack.TCP, Flags: SYN, Src: lo, Dst: lo, SrcPort: 5, DstPort: 6, Hook: Output, Iface: "lo"})
	if v.CtInfo != conntrack.CtUntracked || tr.Count() != 0 {
		t.Fatalf("loopback with NOTRACK: %v, count %d", v.CtInfo, tr.Count())
	}
	v = tr.Process(&Packet{Proto: conntrack.TCP, Flags: SYN, Src: cli, Dst: srv, SrcPort: 5, DstPort: 6, Hook: Prerouting, Iface: "eth0"})
	if v.CtInfo != conntrack.CtNew {
		t.Fatalf("eth0: %v", v.CtInfo)
	}
}

func TestFlowsRenderAndIPv6Zones(t *testing.T) {
	tr, _ := newT(t, nil)
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	tr.Process(&Packet{Proto: conntrack.UDP, Src: a, Dst: b, SrcPort: 1000, DstPort: 53, Zone: 7})
	tr.Process(&Packet{Proto: conntrack.UDP, Src: a, Dst: b, SrcPort: 1000, DstPort: 53, Zone: 8})
	tr.Process(&Packet{Proto: 99, Src: cli, Dst: srv})
	var sb strings.Builder
	if err := tr.WriteProc(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("want 3 entries:\n%s", out)
	}
	// the lines parse back with ctdoctor's own /proc parser
	zones := map[uint16]bool{}
	err := conntrack.ReadAll(strings.NewReader(out))(func(f *conntrack.Flow) error {
		zones[f.Zone] = true
		if f.Proto == conntrack.UDP && (f.Timeout != 30 || !f.Unreplied() || f.Family != conntrack.IPv6) {
			t.Errorf("udp entry %s", f)
		}
		if f.Proto == 99 && f.Timeout != 600 {
			t.Errorf("generic entry %s", f)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("parse back: %v\n%s", err, out)
	}
	if !zones[7] || !zones[8] {
		t.Errorf("zones %v, want 7 and 8 kept apart\n%s", zones, out)
	}
}

func TestRehashKeepsEntries(t *testing.T) {
	tr, _ := newT(t, map[string]int64{SetBuckets: 16})
	for i := range 100 {
		tr.Process(synFrom(i))
	}
	if err := tr.Set("net.netfilter.nf_conntrack_buckets", 1024); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		var f conntrack.Flow
		if _, ok := tr.Lookup(synFrom(i), &f); !ok {
			t.Fatalf("entry %d lost in rehash", i)
		}
	}
	if err := tr.Set("nf_conntrack_bogus", 1); err == nil {
		t.Fatal("unknown setting accepted")
	}
}

func TestConcurrent(t *testing.T) {
	tr, _ := New(Config{Seed: 9, Settings: map[string]int64{SetMax: 2000, SetBuckets: 512}})
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 3000 {
				c := newConv(uint16(i))
				c.cli = netip.AddrFrom4([4]byte{10, 1, byte(w), byte(i % 200)})
				tr.Process(c.pkt(Original, SYN, 0))
				tr.Process(c.pkt(Reply, SYN|ACK, 0))
				if i%3 == 0 {
					tr.Process(c.pkt(Original, ACK, 0))
				}
				if i%100 == 0 {
					_ = tr.Counts()
					_ = tr.Flows(func(*conntrack.Flow) error { return nil })
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	c := tr.Counts()
	sum := 0
	for _, n := range c.TCP {
		sum += n
	}
	n := 0
	_ = tr.Flows(func(*conntrack.Flow) error { n++; return nil })
	if sum != c.Total || n != c.Total || c.Total > 2000 {
		t.Fatalf("counts by state %d, flows %d, total %d (max 2000)", sum, n, c.Total)
	}
}

func TestKeyLayout(t *testing.T) {
	if unsafe.Sizeof(key{}) != keySize {
		t.Fatalf("key is %d bytes, the hash reads %d", unsafe.Sizeof(key{}), keySize)
	}
	if unsafe.Sizeof(entry{}) != entrySize || unsafe.Sizeof(chunk{}.e)%4096 != 0 {
		t.Fatalf("entry is %d bytes, want %d: one cache line", unsafe.Sizeof(entry{}), entrySize)
	}
}

func TestGCEarlyDropMode(t *testing.T) {
	tr, vc := newT(t, map[string]int64{SetMax: 40, SetBuckets: 40})
	// 30 ASSURED connections, 8 of them closed (TIME_WAIT), then SYNs: the
	// table reaches its max, and once a SYN is dropped the next GC pass
	// kills early-droppable entries (unreplied SYNs, TIME_WAIT) while the
	// table is at 95 % or more — never the ASSURED ESTABLISHED ones.
	for i := range 30 {
		c := newConv(uint16(3000 + i))
		for _, s := range []struct {
			d Direction
			f TCPFlags
		}{{Original, SYN}, {Reply, SYN | ACK}, {Original, ACK}} {
			tr.Process(c.pkt(s.d, s.f, 0))
		}
		if i < 8 {
			for _, s := range []struct {
				d Direction
				f TCPFlags
			}{{Original, FIN | ACK}, {Reply, FIN | ACK}, {Original, ACK}} {
				tr.Process(c.pkt(s.d, s.f, 0))
			}
		}
	}
	dropped := false
	for i := 0; i < 200 && !dropped; i++ {
		dropped = tr.Process(synFrom(i)).Drop
	}
	if !dropped {
		t.Skip("no SYN was dropped: every bucket range had something to early-drop")
	}
	before := tr.Counts()
	vc.Advance(2 * time.Second)
	after := tr.Counts()
	// the pass stops as soon as the table is below 95 % (38 of 40)
	if after.Total != 37 || before.Total != 40 {
		t.Fatalf("after the GC pass: %+v (before %+v), want 40 → 37 entries", after, before)
	}
	if after.TCP[conntrack.TCPEstablished] != 22 {
		t.Fatalf("ESTABLISHED %d, want the 22 ASSURED ones kept", after.TCP[conntrack.TCPEstablished])
	}
}

// checkTable verifies the hash table against the entries: every live
// entry's two nodes are each in the chain of their tuple's bucket exactly
// once, carrying their tuple's hash; buckets mirror their head node's link;
// chain lengths and the count agree; every entry is found in both
// directions.
func checkTable(t *testing.T, tr *Tracker) {
	t.Helper()
	seen := map[nodeRef]bool{}
	for bi := range tr.buckets {
		b := &tr.buckets[bi]
		if b.head != 0 {
			hn := tr.slab.node(b.head)
			if b.second != hn.next || b.tag2len&^lenBits != hn.hash&^lenBits {
				t.Fatalf("bucket %d: second %d/%#x, head node links %d/%#x", bi, b.second, b.tag2len, hn.next, hn.hash)
			}
		}
		n := 0
		for r, h := b.head, b.hash; r != 0; n++ {
			if seen[r] {
				t.Fatalf("bucket %d: node %d twice", bi, r)
			}
			seen[r] = true
			e := tr.slab.at(refIdx(r))
			if e.flags&eLive == 0 {
				t.Fatalf("bucket %d: node %d of a free entry", bi, r)
			}
			k := e.k
			if refDir(r) == Reply {
				k = invert(&e.k)
			}
			if want := tr.h.hash(&k); h != want || bucketOf(h, len(tr.buckets)) != bi {
				t.Fatalf("bucket %d: node %d carries hash %#x, tuple hashes to %#x", bi, r, h, want)
			}
			nd := tr.slab.node(r)
			r, h = nd.next, nd.hash
		}
		if l := b.len(); l < lenBits && int(l) != n {
			t.Fatalf("bucket %d: length %d, chain %d", bi, l, n)
		}
	}
	live := 0
	for i := uint32(0); i < tr.slab.used; i++ {
		e := tr.slab.at(i)
		if e.flags&eLive == 0 {
			continue
		}
		live++
		for _, d := range []Direction{Original, Reply} {
			if !seen[mkRef(i, d)] {
				t.Fatalf("entry %d: %v node in no chain", i, d)
			}
			k := e.k
			if d == Reply {
				k = invert(&e.k)
			}
			// at the last reaped tick every live entry is unexpired
			if r, _ := tr.find(tr.h.hash(&k), &k, (tr.cursor-1)<<tickShift); r != mkRef(i, d) {
				t.Fatalf("entry %d: find(%v tuple) = %d", i, d, r)
			}
		}
	}
	if live != tr.count || len(seen) != 2*live {
		t.Fatalf("%d live entries, count %d, %d nodes chained", live, tr.count, len(seen))
	}
}

// TestChainsConsistent churns a small table (long chains, early drops,
// expiry, RST kills, rehashes) and checks its structure after each round.
func TestChainsConsistent(t *testing.T) {
	tr, vc := newT(t, map[string]int64{SetMax: 300, SetBuckets: 16, SetUDPTimeout: 5})
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 60 {
		for range 100 {
			i := r.IntN(400)
			switch r.IntN(3) {
			case 0: // UDP, expires after 5 s unless answered
				p := &Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: uint16(i), DstPort: 53}
				tr.Process(p)
				if r.IntN(2) == 0 {
					tr.Process(&Packet{Proto: conntrack.UDP, Src: srv, Dst: cli, SrcPort: 53, DstPort: uint16(i)})
				}
			case 1: // a SYN; sometimes refused (the RST kills it)
				c := newConv(uint16(i))
				tr.Process(c.pkt(Original, SYN, 0))
				if r.IntN(3) == 0 {
					tr.Process(c.pkt(Reply, RST|ACK, 0))
				}
			case 2:
				c := newConv(uint16(i))
				c.srv = netip.AddrFrom4([4]byte{10, 0, 3, byte(i)})
				tr.Process(c.pkt(Original, SYN, 0))
				tr.Process(c.pkt(Reply, SYN|ACK, 0))
				tr.Process(c.pkt(Original, ACK, 0))
			}
			vc.Advance(time.Duration(r.IntN(200)) * time.Millisecond)
		}
		if round%20 == 19 {
			if err := tr.Set(SetBuckets, int64(8+round)); err != nil {
				t.Fatal(err)
			}
		}
		tr.Count() // runs the GC
		checkTable(t, tr)
	}
	if s := tr.TotalStats(); s.Values[conntrack.StatEarlyDrop] == 0 {
		t.Fatal("the churn never reached the early-drop path")
	}
}

// TestClockWraps runs timeouts across the wrap of the 32-bit time units
// (2^52 ns): expiry must still come after the timeout, not before or never.
func TestClockWraps(t *testing.T) {
	vc := &VirtualClock{}
	vc.Set(1<<52 - 10*time.Second)
	tr, err := New(Config{Clock: vc, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var f conntrack.Flow
	p := &Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 1, DstPort: 2}
	tr.Process(p)
	vc.Advance(20 * time.Second)
	if _, ok := tr.Lookup(p, &f); !ok || f.Timeout != 10 {
		t.Fatalf("20 s into a 30 s timeout across the wrap: found %v, timeout %d, want 10", ok, f.Timeout)
	}
	vc.Advance(12 * time.Second)
	if n := tr.Count(); n != 0 {
		t.Fatalf("32 s into a 30 s timeout across the wrap: %d entries, want 0", n)
	}
}

// A new TCP entry has seen no window yet: the kernel zeroes its TCP data,
// so last_win is 0 and any state timeout above tcp_timeout_max_retrans is
// capped to it until an ACK-class packet opens the window (kernel scenario
// tcp/syn-timeout-capped-by-max-retrans).
func TestNewTCPEntryHasZeroWindow(t *testing.T) {
	tr, _ := newT(t, map[string]int64{SetTCPTimeoutMaxRetrans: 60})
	c := newConv(1)
	if v := tr.Process(c.pkt(Original, SYN, 0)); v.Timeout != 60 {
		t.Fatalf("SYN_SENT timeout %d, want 60 (120 capped by max_retrans while last_win is 0)", v.Timeout)
	}
}

// repliedUDP tracks a UDP request and, 1 s later, its reply; it returns
// the request packet to send again.
func repliedUDP(t *testing.T) (*Tracker, *VirtualClock, *Packet) {
	tr, vc := newT(t, nil)
	out := &Packet{Proto: conntrack.UDP, Src: cli, Dst: srv, SrcPort: 5000, DstPort: 53}
	tr.Process(out)
	vc.Advance(time.Second)
	tr.Process(&Packet{Proto: conntrack.UDP, Src: srv, Dst: cli, SrcPort: 53, DstPort: 5000})
	return tr, vc, out
}

// The UDP stream rule needs more than 2 s since creation, not 2 s less
// the time units' rounding.
func TestUDPStreamNotBefore2s(t *testing.T) {
	tr, vc, out := repliedUDP(t)
	vc.Advance(time.Second - 200*time.Microsecond)
	if v := tr.Process(out); v.Timeout != 30 || v.Status&conntrack.StatusAssured != 0 {
		t.Fatalf("1.9998 s after creation: timeout %d status %v, want 30, not ASSURED", v.Timeout, v.Status)
	}
}

// A UDP stream stays one for as long as it lives: the 2 s rule must not
// wrap when the 32-bit time units do, 26 days after creation.
func TestUDPStreamPast26Days(t *testing.T) {
	tr, vc, out := repliedUDP(t)
	vc.Advance(2 * time.Second)
	tr.Process(out) // now a stream: 120 s
	for elapsed := time.Duration(0); elapsed < 28*24*time.Hour; elapsed += 100 * time.Second {
		vc.Advance(100 * time.Second)
		if v := tr.Process(out); v.Created || v.Timeout != 120 {
			t.Fatalf("after %v: created %v, timeout %d, want 120 on the same entry", elapsed+100*time.Second, v.Created, v.Timeout)
		}
	}
}
