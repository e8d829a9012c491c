package engine_test

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/internal/kernlab"
)

// handshake is the three-way handshake of connection 0.
var handshake = []step{
	{From: cli, Flags: "S"},
	{From: srv, Flags: "SA"},
	{From: cli, Flags: "A"},
}

func join(parts ...[]step) []step {
	var s []step
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

// scenarios are the differential cases: each runs in a lab of its own.
var scenarios = []scenario{
	{Name: "tcp/handshake-data-client-closes", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "PA", Len: 100, Note: "data, not yet acknowledged"},
		{From: srv, Flags: "A"},
		{From: srv, Flags: "PA", Len: 300},
		{From: cli, Flags: "A"},
		{From: cli, Flags: "FA", Note: "client closes"},
		{From: srv, Flags: "A"},
		{From: srv, Flags: "FA"},
		{From: cli, Flags: "A"},
	})},
	{Name: "tcp/server-closes-first", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: srv, Flags: "PA", Len: 50},
		{From: cli, Flags: "A"},
		{From: srv, Flags: "FA", Note: "server closes"},
		{From: cli, Flags: "A"},
		{From: cli, Flags: "FA"},
		{From: srv, Flags: "A"},
	})},
	{Name: "tcp/fin-with-data-and-crossing-fins", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "FPA", Len: 20, Note: "data and FIN in one segment"},
		{From: srv, Flags: "FA", Note: "server's FIN acknowledges the client's"},
		{From: cli, Flags: "A"},
	})},
	{Name: "tcp/rst-from-client-established", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "R"},
		{From: srv, Flags: "A", Note: "late ACK after the RST"},
	})},
	{Name: "tcp/rst-from-server-established", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: srv, Flags: "RA"},
	})},
	{Name: "tcp/refused-connect", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: srv, Flags: "RA", Note: "connection refused: no entry left"},
		{From: cli, Flags: "S", Retx: true, Note: "retry creates a new entry"},
	}},
	{Name: "tcp/icmp-error-for-syn", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: srv, Unreach: true, Note: "port unreachable quoting the SYN"},
		{From: cli, Flags: "S", Retx: true},
	}},
	{Name: "tcp/reopen-from-time-wait-by-server", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "FA"},
		{From: srv, Flags: "FA"},
		{From: cli, Flags: "A", Note: "TIME_WAIT"},
		{From: srv, Flags: "S", NewISN: true, Note: "the server opens the same 4-tuple"},
		{From: cli, Flags: "SA"},
		{From: srv, Flags: "A"},
	})},
	{Name: "tcp/client-aborts-syn", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: cli, Flags: "R", Note: "RST before any reply"},
	}},
	{Name: "tcp/rst-in-syn-recv", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: srv, Flags: "SA"},
		{From: cli, Flags: "R", Note: "RST after a reply was seen"},
	}},
	{Name: "tcp/simultaneous-open", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: srv, Flags: "S", Note: "crossing SYN"},
		{From: cli, Flags: "SA"},
		{From: srv, Flags: "SA"},
		{From: cli, Flags: "A"},
		{From: srv, Flags: "A"},
		{From: cli, Flags: "PA", Len: 10},
		{From: srv, Flags: "A"},
	}},
	{Name: "tcp/syn-and-synack-retransmits", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "S"},
		{From: cli, Flags: "S", Retx: true},
		{From: cli, Flags: "S", Retx: true},
		{From: cli, Flags: "S", Retx: true},
		{From: cli, Flags: "S", Retx: true, Note: "fourth retransmit"},
		{From: srv, Flags: "SA"},
		{From: srv, Flags: "SA", Retx: true},
		{From: srv, Flags: "SA", Retx: true},
		{From: srv, Flags: "SA", Retx: true},
		{From: cli, Flags: "A"},
	}},
	{Name: "tcp/data-retransmits", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: srv, Flags: "A", Note: "window update"},
		{From: cli, Flags: "PA", Len: 500},
		{From: cli, Flags: "PA", Len: 500, Retx: true},
		{From: cli, Flags: "PA", Len: 500, Retx: true},
		{From: cli, Flags: "PA", Len: 500, Retx: true, Note: "third retransmit"},
		{From: srv, Flags: "A", Note: "finally acknowledged"},
	})},
	{Name: "tcp/reopen-from-time-wait", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "FA"},
		{From: srv, Flags: "FA"},
		{From: cli, Flags: "A", Note: "TIME_WAIT"},
		{From: cli, Flags: "S", NewISN: true, Note: "same 4-tuple reopened"},
		{From: srv, Flags: "SA"},
		{From: cli, Flags: "A"},
	})},
	{Name: "tcp/reopen-after-rst", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: srv, Flags: "RA", Note: "CLOSE"},
		{From: cli, Flags: "S", NewISN: true, Note: "same 4-tuple reopened from CLOSE"},
		{From: srv, Flags: "SA"},
		{From: cli, Flags: "A"},
	})},
	{Name: "tcp/stale-syn-in-established", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "S", Note: "the original SYN again: ignored"},
		{From: cli, Flags: "PA", Len: 10},
		{From: srv, Flags: "A"},
	})},
	{Name: "tcp/new-syn-in-established-resync", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "S", NewISN: true, Note: "client restarted: new SYN on the old 4-tuple"},
		{From: srv, Flags: "SA", Note: "server accepts it"},
		{From: cli, Flags: "A"},
		{From: cli, Flags: "PA", Len: 10},
		{From: srv, Flags: "A"},
	})},
	{Name: "tcp/new-syn-in-established-challenge-ack", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "S", NewISN: true, Note: "client restarted: new SYN on the old 4-tuple"},
		{From: srv, Flags: "A", Stale: true, Note: "server's challenge ACK"},
		{From: cli, Flags: "R", Stale: true, Note: "client resets the old connection"},
		{From: cli, Flags: "S", Note: "and retries"},
		{From: srv, Flags: "SA"},
		{From: cli, Flags: "A"},
	})},
	{Name: "tcp/mid-stream-pickup", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "PA", Len: 100, Note: "first packet seen is data"},
		{From: srv, Flags: "A"},
		{From: srv, Flags: "PA", Len: 100},
		{From: cli, Flags: "A"},
		{From: cli, Flags: "FA"},
	}},
	{Name: "tcp/mid-stream-pickup-server-first", Proto: conntrack.TCP, Steps: []step{
		{From: srv, Flags: "A", Note: "a server's ACK creates an entry in its own original direction"},
		{From: cli, Flags: "PA", Len: 10},
	}},
	{Name: "tcp/invalid-flags-without-entry", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "SF", Note: "SYN+FIN"},
		{From: cli, Flags: "SR", Note: "SYN+RST"},
		{From: cli, Flags: "", Note: "no flags"},
		{From: cli, Flags: "F", Note: "FIN without ACK"},
		{From: cli, Flags: "FPU", Note: "xmas"},
		{From: cli, Flags: "SRAFPU", Note: "everything"},
		{From: cli, Flags: "R", Note: "RST without an entry"},
		{From: cli, Flags: "FA", Note: "FIN without an entry"},
		{From: srv, Flags: "SA", Note: "SYN/ACK without an entry"},
	}},
	{Name: "tcp/invalid-flags-in-established", Proto: conntrack.TCP, Steps: join(handshake, []step{
		{From: cli, Flags: "SF", Note: "SYN+FIN"},
		{From: srv, Flags: "", Note: "no flags"},
		{From: cli, Flags: "F", Note: "FIN without ACK"},
		{From: srv, Flags: "SRA", Note: "SYN+RST+ACK"},
		{From: cli, Flags: "PA", Len: 10, Note: "still established"},
		{From: srv, Flags: "A"},
	})},
	{Name: "tcp/syn-ece-cwr-and-urg", Proto: conntrack.TCP, Steps: []step{
		{From: cli, Flags: "SEC", Note: "ECN setup SYN"},
		{From: srv, Flags: "SAE"},
		{From: cli, Flags: "AU", Note: "ACK+URG"},
	}},
	{Name: "tcp6/handshake-data-close", Proto: conntrack.TCP, V6: true, Steps: join(handshake, []step{
		{From: cli, Flags: "PA", Len: 100},
		{From: srv, Flags: "A"},
		{From: cli, Flags: "FA"},
		{From: srv, Flags: "FA"},
		{From: cli, Flags: "A"},
	})},
	{Name: "udp/request-reply-stream", Proto: conntrack.UDP, Steps: []step{
		{From: cli, Len: 40, Note: "request"},
		{From: srv, Len: 200, Note: "reply"},
		{From: cli, Len: 40, Note: "within 2 s of creation"},
		{Idle: true, Wait: 2100 * time.Millisecond, Note: "the timeout runs down"},
		{From: cli, Len: 40, Note: "stream: more than 2 s after creation"},
		{From: srv, Len: 40},
	}},
	{Name: "udp/unreplied", Proto: conntrack.UDP, Steps: []step{
		{From: cli, Len: 40},
		{From: cli, Len: 40},
		{From: srv, Len: 40, Conn: 1, Note: "server-initiated: its own entry"},
	}},
	{Name: "udp/port-unreachable", Proto: conntrack.UDP, Steps: []step{
		{From: cli, Len: 40},
		{From: srv, Unreach: true, Note: "RELATED"},
		{From: srv, Unreach: true, Conn: 5, Note: "quotes a packet nobody sent"},
		{From: cli, Unreach: true, Note: "client answers the server's (never sent) reply"},
	}},
	{Name: "udp6/request-reply-unreachable", Proto: conntrack.UDP, V6: true, Steps: []step{
		{From: cli, Len: 40},
		{From: srv, Len: 40},
		{From: srv, Unreach: true},
		{From: srv, Unreach: true, Conn: 5},
	}},
	{Name: "icmp/echo", Proto: conntrack.ICMP, Steps: []step{
		{From: cli, Note: "echo request"},
		{From: srv, Note: "echo reply"},
		{From: cli, Note: "next request, same id"},
		{From: srv},
		{From: srv, Conn: 3, Note: "echo reply nobody asked for"},
		{From: srv, Unreach: true, Note: "error quoting the echo request"},
	}},
	{Name: "icmp6/echo", Proto: conntrack.ICMP, V6: true, Steps: []step{
		{From: cli},
		{From: srv},
		{From: srv, Conn: 3, Note: "echo reply nobody asked for"},
	}},
}

// TestKernelDifferential runs every scenario in a namespace lab of its own
// and compares the engine with the kernel after each packet.
func TestKernelDifferential(t *testing.T) {
	kernlab.Require(t)
	for i := range scenarios {
		sc := &scenarios[i]
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, sc)
		})
	}
}

// fullOutcome is what happens to a new connection's first packet when the
// table is at its max.
type fullOutcome struct {
	Dropped    bool   // conntrack dropped the packet
	DropDelta  uint64 // the drop counter's increase
	EarlyDrops bool   // early_drop evicted at least one entry
	Created    bool   // the new connection has an entry afterwards
	CtInfo     string // what a state match saw ("dropped" when dropped)
}

// recordedFull is the kernel's outcome as observed on Linux 6.18 by this
// test, used when the live kernel half is not run.
var recordedFull = map[bool]fullOutcome{
	false: {Dropped: false, DropDelta: 0, EarlyDrops: true, Created: true, CtInfo: "NEW"},
	true:  {Dropped: true, DropDelta: 1, EarlyDrops: false, Created: false, CtInfo: "dropped"},
}

// TestKernelTableFull checks table-full semantics, engine against kernel:
// with only ASSURED entries at max, a new connection is dropped (drop
// counter +1, no entry); with non-ASSURED entries, early_drop evicts and
// the new connection gets its entry. The kernel half fills a lab router to
// the global nf_conntrack_max (the count is per namespace, the limit is
// global, so no host setting changes) — the ASSURED variant only with
// CTDOCTOR_TABLEFULL_TEST=1, because its drop writes a "table full" line
// to the host's kernel log. The engine half fills a 64-entry tracker.
func TestKernelTableFull(t *testing.T) {
	t.Parallel()
	for _, assured := range []bool{false, true} {
		name := "non-assured-entries-early-drop"
		if assured {
			name = "assured-entries-drop"
		}
		t.Run(name, func(t *testing.T) {
			want, live := kernelTableFull(t, assured)
			if !live {
				want = recordedFull[assured]
				t.Logf("comparing with the kernel outcome recorded on Linux 6.18: %+v", want)
			}
			got := engineTableFull(t, assured)
			if got != want {
				t.Errorf("engine disagrees with kernel on a full table (assured=%v):\nkernel %+v\nengine %+v", assured, want, got)
			}
		})
	}
}

// kernelTableFull runs the kernel half; live is false when it did not run.
func kernelTableFull(t *testing.T, assured bool) (out fullOutcome, live bool) {
	if os.Geteuid() != 0 {
		t.Log("kernel half skipped: needs root to create network namespaces")
		return out, false
	}
	if assured && os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Log("kernel half skipped: set CTDOCTOR_TABLEFULL_TEST=1 (the drop writes a \"table full\" line to the host's kernel log)")
		return out, false
	}
	max, err := kernlab.GlobalMax()
	if err != nil || max <= 0 || max > 1<<20 {
		t.Logf("kernel half skipped: nf_conntrack_max %d (%v) is unreadable or too large to fill in a test", max, err)
		return out, false
	}
	lab := kernlab.New(t)
	status := ""
	if assured {
		status = "-u SEEN_REPLY,ASSURED "
	}
	err = lab.Fill(max, func(i int) string {
		return fmt.Sprintf("-t 3600 %s-s 10.%d.%d.%d -d 10.200.0.1 -p tcp --sport %d --dport 80 --state ESTABLISHED",
			status, 100+i>>16&127, i>>8&255, i&255, 1024+i%60000)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, m, err := lab.Count(); err != nil || n != int64(max) {
		t.Fatalf("after the fill: count %d of max %d (%v), want %d", n, m, err, max)
	}
	before, err := lab.Stats()
	if err != nil {
		t.Fatal(err)
	}
	sc := &scenario{Proto: conntrack.TCP}
	p, err := newBuilder(sc).packet(&step{From: cli, Flags: "S"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := engine.AppendIP(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := lab.Send(cli, raw)
	if err != nil {
		t.Fatal(err)
	}
	after, err := lab.Stats()
	if err != nil {
		t.Fatal(err)
	}
	out.Dropped = res.Dropped
	out.CtInfo = kernelCtInfo(res)
	d0, _ := before.Get(conntrack.StatDrop)
	d1, _ := after.Get(conntrack.StatDrop)
	e0, _ := before.Get(conntrack.StatEarlyDrop)
	e1, _ := after.Get(conntrack.StatEarlyDrop)
	out.DropDelta, out.EarlyDrops = d1-d0, e1 > e0
	flows, err := lab.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for i := range flows {
		if flows[i].Orig.Src == p.Src && flows[i].Orig.SrcPort == p.SrcPort {
			out.Created = true
			t.Logf("kernel: the new connection's entry: %s", describe(&flows[i]))
		}
	}
	n, _, _ := lab.Count()
	t.Logf("kernel (max %d): %+v; early_drop +%d, count after %d", max, out, e1-e0, n)
	return out, true
}

// engineTableFull runs the engine half on a 64-entry table.
func engineTableFull(t *testing.T, assured bool) fullOutcome {
	const max = 64
	clock := &engine.VirtualClock{}
	tr, err := engine.New(engine.Config{
		Settings: map[string]int64{engine.SetMax: max, engine.SetBuckets: max},
		Seed:     1,
		Clock:    clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}) }
	dst := netip.MustParseAddr("10.200.0.1")
	for i := range max {
		syn := engine.Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: src(i), Dst: dst,
			SrcPort: uint16(1024 + i), DstPort: 80, Flags: engine.SYN, Seq: 1000, Window: 65535}
		if v := tr.Process(&syn); v.CtInfo != conntrack.CtNew {
			t.Fatalf("fill %d: SYN %+v", i, v)
		}
		if !assured {
			continue
		}
		synack := engine.Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: dst, Dst: src(i),
			SrcPort: 80, DstPort: uint16(1024 + i), Flags: engine.SYN | engine.ACK, Seq: 5000, Ack: 1001, Window: 65535}
		ack := syn
		ack.Flags, ack.Seq, ack.Ack = engine.ACK, 1001, 5001
		tr.Process(&synack)
		if v := tr.Process(&ack); !v.Status.Has(conntrack.StatusAssured) {
			t.Fatalf("fill %d: handshake did not assure the entry: %+v", i, v)
		}
	}
	if n := tr.Count(); n != max {
		t.Fatalf("after the fill: engine count %d, want %d", n, max)
	}
	before := tr.TotalStats()
	sc := &scenario{Proto: conntrack.TCP}
	p, err := newBuilder(sc).packet(&step{From: cli, Flags: "S"})
	if err != nil {
		t.Fatal(err)
	}
	v := tr.Process(&p)
	after := tr.TotalStats()
	d0, _ := before.Get(conntrack.StatDrop)
	d1, _ := after.Get(conntrack.StatDrop)
	e0, _ := before.Get(conntrack.StatEarlyDrop)
	e1, _ := after.Get(conntrack.StatEarlyDrop)
	var f conntrack.Flow
	_, created := tr.Lookup(&p, &f)
	out := fullOutcome{Dropped: v.Drop, DropDelta: d1 - d0, EarlyDrops: e1 > e0, Created: created, CtInfo: engineCtInfo(v)}
	t.Logf("engine (max %d): %+v; verdict %+v; early_drop +%d, count after %d", max, out, v, e1-e0, tr.Count())
	return out
}
