package watch

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

func tcpEntry(src, dst string, dport uint16, st conntrack.TCPState) entry {
	f := conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.TCP, State: uint8(st),
		Orig: conntrack.Tuple{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: dport}}
	return entryOf(&f)
}

func rowsString(rows []Row) string {
	var b []string
	for _, r := range rows {
		b = append(b, fmt.Sprintf("%s=%d", r.Key, r.Entries))
	}
	return strings.Join(b, " ")
}

// The table counts each entry once by state, protocol, source,
// destination and service; a state change moves one count, an update
// without the state (no CTA_PROTOINFO) changes nothing, a removal takes
// every count back, and the same ID for another connection replaces the
// old one.
func TestTableCounts(t *testing.T) {
	tab := newTable(0)
	tab.put(1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPSynSent), true)
	tab.put(2, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPEstablished), true)
	tab.put(3, tcpEntry("10.0.0.2", "10.0.1.2", 443, conntrack.TCPTimeWait), true)
	udp := conntrack.Flow{Family: conntrack.IPv6, Proto: conntrack.UDP,
		Orig: conntrack.Tuple{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::53"), DstPort: 53}}
	tab.put(4, entryOf(&udp), false)
	icmp := conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.ICMP,
		Orig: conntrack.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.1.1")}}
	tab.put(5, entryOf(&icmp), false)

	tab.put(1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPEstablished), true) // SYN_SENT → ESTABLISHED
	tab.put(2, tcpEntry("10.0.0.1", "10.0.1.1", 80, 0), false)                       // a mark change: no state
	if tab.put(3, tcpEntry("10.0.0.2", "10.0.1.2", 443, conntrack.TCPTimeWait), true) {
		t.Error("an update was counted as a new entry")
	}
	b := tab.rows(10)
	for _, c := range []struct{ name, got, want string }{
		{"state", rowsString(b.byState), "ESTABLISHED=2 TIME_WAIT=1"},
		{"proto", rowsString(b.byProto), "tcp=3 icmp=1 udp=1"},
		{"sources", rowsString(b.sources), "10.0.0.1=3 10.0.0.2=1 2001:db8::1=1"},
		{"dests", rowsString(b.dests), "10.0.1.1=3 10.0.1.2=1 2001:db8::53=1"},
		{"services", rowsString(b.service), "10.0.1.1:80/tcp=2 10.0.1.2:443/tcp=1 [2001:db8::53]:53/udp=1"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s, want %s", c.name, c.got, c.want)
		}
	}
	if b.total != 5 {
		t.Errorf("total %d, want 5", b.total)
	}
	// ID 3 reused by another connection whose end was missed.
	tab.put(3, tcpEntry("10.0.0.9", "10.0.1.2", 443, conntrack.TCPSynSent), true)
	for _, id := range []uint32{1, 2, 4, 5, 99} {
		tab.remove(id)
	}
	b = tab.rows(10)
	if got := rowsString(b.byState) + "|" + rowsString(b.sources) + "|" + rowsString(b.service); got != "SYN_SENT=1|10.0.0.9=1|10.0.1.2:443/tcp=1" || b.total != 1 {
		t.Errorf("after removals: %s (total %d)", got, b.total)
	}
	if tab.src.distinct() != 1 || len(tab.src.v4.free) == 0 {
		t.Errorf("freed source ids not kept for reuse: %d distinct, %d free", tab.src.distinct(), len(tab.src.v4.free))
	}
	tab.remove(3)
	if tab.total != 0 || len(tab.flows) != 0 || tab.src.distinct()+tab.dst.distinct()+tab.svc.distinct() != 0 {
		t.Errorf("empty table keeps %d entries, %d keys", tab.total, tab.src.distinct()+tab.dst.distinct()+tab.svc.distinct())
	}
}

// A listing updates the table in place: a listed entry takes the
// listing's state unless an event changed it since the listing began (the
// event is newer), an entry listed twice counts once, and what was
// neither listed nor changed is swept away.
func TestTableListing(t *testing.T) {
	tab := newTable(0)
	tab.put(1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPSynSent), true)
	tab.put(2, tcpEntry("10.0.0.2", "10.0.1.1", 80, conntrack.TCPEstablished), true)
	tab.put(3, tcpEntry("10.0.0.3", "10.0.1.1", 80, conntrack.TCPEstablished), true)
	tab.begin()
	tab.put(1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPEstablished), true) // an event during the listing
	fresh := 0
	for _, l := range []struct {
		id uint32
		e  entry
	}{
		{1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPSynSent)}, // listed before the event: older
		{2, tcpEntry("10.0.0.2", "10.0.1.1", 80, conntrack.TCPTimeWait)},
		{4, tcpEntry("10.0.0.4", "10.0.1.1", 443, conntrack.TCPSynSent)},
		{4, tcpEntry("10.0.0.4", "10.0.1.1", 443, conntrack.TCPSynSent)}, // listed twice (a resize)
	} {
		if tab.listed(l.id, l.e) {
			fresh++
		}
	}
	if n := tab.sweep(); n != 1 || fresh != 1 {
		t.Errorf("swept %d, new %d; want entry 3 swept, entry 4 new", n, fresh)
	}
	b := tab.rows(10)
	if got := rowsString(b.byState) + "|" + rowsString(b.sources) + "|" + rowsString(b.service); got !=
		"ESTABLISHED=1 SYN_SENT=1 TIME_WAIT=1|10.0.0.1=1 10.0.0.2=1 10.0.0.4=1|10.0.1.1:80/tcp=2 10.0.1.1:443/tcp=1" || b.total != 3 {
		t.Errorf("%s (total %d)", got, b.total)
	}
}

// The top tables keep K rows, largest first with ties in key order, and
// an "other" row with the rest; IPv4-mapped IPv6 addresses stay apart
// from IPv4 ones.
func TestTableTopK(t *testing.T) {
	tab := newTable(0)
	id := uint32(1)
	for i := 1; i <= 15; i++ {
		for range i {
			tab.put(id, tcpEntry(fmt.Sprintf("10.0.0.%d", i), "10.0.1.1", uint16(1000+i%3), conntrack.TCPEstablished), true)
			id++
		}
	}
	mapped := conntrack.Flow{Proto: conntrack.UDP, Orig: conntrack.Tuple{Src: netip.MustParseAddr("::ffff:10.0.0.15"), Dst: netip.MustParseAddr("10.0.1.1")}}
	tab.put(id, entryOf(&mapped), false)
	b := tab.rows(3)
	if got := rowsString(b.sources); got != "10.0.0.15=15 10.0.0.14=14 10.0.0.13=13 other=79" {
		t.Errorf("sources %s", got)
	}
	// Port 1000 gets sources 3, 6, … 15 (45 entries), 1001 gets 1, 4, …
	// 13 (35), 1002 gets 2, 5, … 14 (40); the UDP entry is port 0.
	if got := rowsString(b.service); got != "10.0.1.1:1000/tcp=45 10.0.1.1:1002/tcp=40 10.0.1.1:1001/tcp=35 other=1" {
		t.Errorf("services %s", got)
	}
	tab2 := newTable(0)
	for i, a := range []string{"10.0.0.3", "10.0.0.1", "10.0.0.2"} {
		tab2.put(uint32(i+1), tcpEntry(a, "10.0.1.1", 80, conntrack.TCPEstablished), true)
	}
	if got := rowsString(tab2.rows(2).sources); got != "10.0.0.1=1 10.0.0.2=1 other=1" {
		t.Errorf("ties: %s", got)
	}
}

// The growth is the least-squares slope of the count: at 100 entries/s
// with 1000 free the table is full in 10 s; full now is 0; a shrinking
// table, or fewer than three samples, is -1.
func TestTimeToFull(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	g := growth{window: 30 * time.Second}
	if d := g.timeToFull(10, 100); d != -1 {
		t.Errorf("no samples: %v", d)
	}
	for i := range 40 {
		// 100/s with noise that averages out: +5, -5, +5, …
		noise := int64(5 - 10*(i%2))
		g.add(t0.Add(time.Duration(i)*time.Second), 9000+int64(i)*100+noise)
	}
	if len(g.samples) != 31 {
		t.Errorf("%d samples kept, want the last 30 s (31)", len(g.samples))
	}
	s, ok := g.slope()
	if !ok || math.Abs(s-100) > 1 {
		t.Errorf("slope %.2f, want 100/s", s)
	}
	if d := g.timeToFull(12900, 13900); (d - 10*time.Second).Abs() > 100*time.Millisecond {
		t.Errorf("time to full %v, want 10 s", d)
	}
	if d := g.timeToFull(13900, 13900); d != 0 {
		t.Errorf("full: %v, want 0", d)
	}
	if d := g.timeToFull(10, -1); d != -1 {
		t.Errorf("max unknown: %v", d)
	}
	down := growth{window: 30 * time.Second}
	for i := range 5 {
		down.add(t0.Add(time.Duration(i)*time.Second), 1000-int64(i))
	}
	if d := down.timeToFull(995, 2000); d != -1 {
		t.Errorf("shrinking: %v, want -1", d)
	}
}

// Rates are counter differences over the time between the samples; a
// counter that went back (a CPU went offline) gives 0.
func TestRates(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	stats := func(drop, early, failed uint64) *conntrack.Stats {
		var s conntrack.Stats
		s.Set(conntrack.StatDrop, drop)
		s.Set(conntrack.StatEarlyDrop, early)
		s.Set(conntrack.StatInsertFailed, failed)
		return &s
	}
	a := counters{at: t0, stats: stats(100, 10, 5)}
	b := counters{at: t0.Add(2 * time.Second), stats: stats(300, 8, 9)}
	if r := rateBetween(&a, &b); r != (rates{drop: 100, earlyDrop: 0, insertFailed: 2}) {
		t.Errorf("rates %+v, want drop 100/s, early_drop 0 (went back), insert_failed 2/s", r)
	}
	if r := rateBetween(nil, &a); r != unknownRates {
		t.Errorf("first sample: %+v", r)
	}
	if r := rateBetween(&a, &counters{at: t0.Add(time.Second)}); r != unknownRates {
		t.Errorf("no stats: %+v", r)
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil || o.Interval != time.Second || o.ListEvery != 30*time.Second || o.PollFor != time.Minute || o.TopK != 10 ||
		o.EventBuffer != ctnetlink.DefaultEventBuffer {
		t.Errorf("defaults %+v, %v", o, err)
	}
	for _, bad := range []Options{{Interval: -1}, {ListEvery: -time.Second}, {TopK: -1}, {EventBuffer: -1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// Events that arrive while a listing runs win over it: an entry ended
// by an event after the listing saw it stays gone, one changed keeps the
// event's state, one created is kept though the listing missed it; an
// update after a destroy does not bring the entry back; Delta is the
// change since the previous frame.
func TestListingWithEvents(t *testing.T) {
	o, _ := Options{}.withDefaults()
	n := &nsWatch{opt: o, prevRows: map[string]map[string]int64{}, ctx: t.Context(), tab: newTable(0)}
	ev := func(typ ctnetlink.EventType, id uint32, src string, st conntrack.TCPState) *ctnetlink.Event {
		e := &ctnetlink.Event{Type: typ, HasState: typ != ctnetlink.EventDestroy}
		e.Flow = conntrack.Flow{ID: id, Family: conntrack.IPv4, Proto: conntrack.TCP, State: uint8(st),
			Orig: conntrack.Tuple{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("10.0.1.1"), DstPort: 80}}
		return e
	}
	n.apply(ev(ctnetlink.EventNew, 1, "10.0.0.1", conntrack.TCPSynSent))
	n.apply(ev(ctnetlink.EventNew, 2, "10.0.0.2", conntrack.TCPEstablished))
	n.finish(time.Now(), time.Time{}, 0, nil) // as if listed: the frames show the table from now on
	n.publish(time.Now())
	// A listing sees entries 1 (SYN_SENT) and 2 (ESTABLISHED) while 1
	// goes ESTABLISHED, 2 ends (and a late update of it comes), and 3
	// comes after the listing passed its place.
	n.listing = true
	n.tab.begin()
	n.listedEntry(2, tcpEntry("10.0.0.2", "10.0.1.1", 80, conntrack.TCPEstablished))
	n.apply(ev(ctnetlink.EventUpdate, 1, "10.0.0.1", conntrack.TCPEstablished))
	n.apply(ev(ctnetlink.EventDestroy, 2, "10.0.0.2", 0))
	n.apply(ev(ctnetlink.EventUpdate, 2, "10.0.0.2", conntrack.TCPTimeWait))
	n.apply(ev(ctnetlink.EventNew, 3, "10.0.0.3", conntrack.TCPSynSent))
	n.listedEntry(1, tcpEntry("10.0.0.1", "10.0.1.1", 80, conntrack.TCPSynSent))
	n.listedEntry(2, tcpEntry("10.0.0.2", "10.0.1.1", 80, conntrack.TCPEstablished)) // read before its end, handled after
	n.finish(time.Now(), time.Time{}, 0, nil)
	n.publish(time.Now())
	f := n.frame
	if got := rowsString(f.ByState) + "|" + rowsString(f.TopSources); got != "ESTABLISHED=1 SYN_SENT=1|10.0.0.1=1 10.0.0.3=1" {
		t.Errorf("after the listing: %s", got)
	}
	want := []Row{{Key: "ESTABLISHED", Entries: 1, Delta: 0}, {Key: "SYN_SENT", Entries: 1, Delta: 0}}
	if !reflect.DeepEqual(f.ByState, want) {
		t.Errorf("deltas %+v, want %+v", f.ByState, want)
	}
	if got := rowsString(f.TopSources[1:]); f.TopSources[1].Delta != 1 || got != "10.0.0.3=1" {
		t.Errorf("sources %+v", f.TopSources)
	}
	if st := n.stats; st.listings != 2 || st.events != 5 || st.swept != 0 {
		t.Errorf("stats %+v: want 2 listings, 5 events applied (the late update ignored), none swept", st)
	}
}

// The kernel log keeps the last 50 events; a rate limiter's notice
// counts the lines it stands for.
func TestKernelLogBounded(t *testing.T) {
	n := &nsWatch{}
	for i := range 60 {
		n.addLog(host.TableFullEvent{LogEvent: host.LogEvent{Text: fmt.Sprint(i)}, Suppressed: i % 2})
	}
	n.addLog(host.TableFullEvent{LogEvent: host.LogEvent{Text: "net_ratelimit: 7 callbacks suppressed"}, Suppressed: 7, Notice: true})
	k := n.frame.KernelLog
	if len(k) != maxKernelLog || k[0].Message != "11" || k[0].Count != 2 || k[47].Count != 1 || k[48].Count != 2 || k[49].Count != 7 {
		t.Errorf("%d events, first %+v, last %+v", len(k), k[0], k[len(k)-1])
	}
}

// An entry the kernel made when no events were sent ends without a
// destroy event; when a connection reuses its ports in TIME_WAIT, the new
// entry of the same tuple (another ID) takes its place. The watcher
// counts the new one instead of the old one, whether the new event comes
// after the listing read the old entry or (the listing's message read
// late) before; an entry that sends events, or a new entry under the
// same ID, is kept.
func TestQuietEntryReplacedByItsTuple(t *testing.T) {
	o, _ := Options{}.withDefaults()
	n := &nsWatch{opt: o, prevRows: map[string]map[string]int64{}, ctx: t.Context(), tab: newTable(0), subscribed: true}
	flow := func(id uint32, sport uint16, st conntrack.TCPState) *conntrack.Flow {
		return &conntrack.Flow{ID: id, Family: conntrack.IPv4, Proto: conntrack.TCP, State: uint8(st),
			Orig: conntrack.Tuple{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: sport, DstPort: 80}}
	}
	ev := func(typ ctnetlink.EventType, f *conntrack.Flow) {
		e := &ctnetlink.Event{Type: typ, HasState: typ != ctnetlink.EventDestroy, Flow: *f}
		n.apply(e)
	}
	list := func(fs ...*conntrack.Flow) {
		for _, f := range fs {
			n.listedFlow(flowID(f), entryOf(f), f)
		}
	}
	states := func() string {
		n.publish(time.Now())
		return fmt.Sprintf("%d %s", n.tab.total, rowsString(n.frame.ByState))
	}
	// The first listing: four entries in TIME_WAIT that sent no event.
	n.listing = true
	n.tab.begin()
	list(flow(1, 40001, conntrack.TCPTimeWait), flow(2, 40002, conntrack.TCPTimeWait), flow(3, 40003, conntrack.TCPTimeWait))
	// Port 40004's entry 4 is replaced by 14 before the listing's message
	// with entry 4 is read.
	ev(ctnetlink.EventNew, flow(14, 40004, conntrack.TCPSynSent))
	list(flow(4, 40004, conntrack.TCPTimeWait))
	n.finish(time.Now(), time.Time{}, 0, nil)
	if got, want := states(), "4 TIME_WAIT=3 SYN_SENT=1"; got != want {
		t.Fatalf("after the listing: %s, want %s", got, want)
	}
	if n.tab.nquiet != 3 {
		t.Errorf("%d quiet entries, want 3", n.tab.nquiet)
	}
	// Port 40001 reused: entry 11 replaces 1. Entry 2 sends an update (it
	// sends events: it is no longer quiet). Port 40003 reused by the same
	// object: the same ID.
	ev(ctnetlink.EventNew, flow(11, 40001, conntrack.TCPSynSent))
	ev(ctnetlink.EventUpdate, flow(2, 40002, conntrack.TCPClose))
	ev(ctnetlink.EventNew, flow(3, 40003, conntrack.TCPSynSent))
	if got, want := states(), "4 SYN_SENT=3 CLOSE=1"; got != want {
		t.Errorf("after port reuse: %s, want %s", got, want)
	}
	if n.tab.nquiet != 0 || n.stats.replaced != 1 {
		t.Errorf("%d quiet entries, %d replaced; want 0 and 1", n.tab.nquiet, n.stats.replaced)
	}
	// A second listing sees the same: nothing to sweep, the index freed.
	n.listing = true
	n.tab.begin()
	list(flow(11, 40001, conntrack.TCPSynSent), flow(2, 40002, conntrack.TCPClose), flow(3, 40003, conntrack.TCPSynSent), flow(14, 40004, conntrack.TCPSynSent))
	n.finish(time.Now(), time.Time{}, 0, nil)
	if got, want := states(), "4 SYN_SENT=3 CLOSE=1"; got != want || n.stats.swept != 0 || n.tab.quietByTuple != nil {
		t.Errorf("after the second listing: %s (want %s), %d swept, index %v", got, want, n.stats.swept, n.tab.quietByTuple)
	}
}
