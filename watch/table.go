package watch

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// addr is an address as a compact map key: the 16-byte form (IPv4
// mapped) and whether it is an IPv6 address, so that 10.0.0.1 and
// ::ffff:10.0.0.1 stay apart as the kernel keeps them.
type addr struct {
	b  [16]byte
	v6 bool
}

func addrOf(a netip.Addr) addr { return addr{b: a.As16(), v6: a.Is6()} }

func (a addr) String() string {
	if a.v6 {
		return netip.AddrFrom16(a.b).String()
	}
	return netip.AddrFrom4([4]byte(a.b[12:])).String()
}

func cmpAddr(x, y addr) int {
	if x.v6 != y.v6 {
		if x.v6 {
			return 1
		}
		return -1
	}
	return bytes.Compare(x.b[:], y.b[:])
}

// svcKey is a service as analyze names one: the original direction's
// destination address, port and protocol.
type svcKey struct {
	a     addr
	port  uint16
	proto uint8
}

// String is "10.0.0.2:80/tcp", "[2001:db8::2]:443/tcp".
func (s svcKey) String() string {
	h := s.a.String()
	if s.a.v6 {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(int(s.port)) + "/" + conntrack.Proto(s.proto).String()
}

func cmpSvc(x, y svcKey) int {
	return cmp.Or(cmpAddr(x.a, y.a), cmp.Compare(x.port, y.port), cmp.Compare(x.proto, y.proto))
}

// counter counts entries by key, each distinct key stored once and named
// by a small id; an id whose count falls to zero is freed for reuse, so
// the memory follows the keys in the table now, not all keys ever seen.
type counter[K comparable] struct {
	ids  map[K]uint32
	keys []K
	n    []int64
	free []uint32
}

func newCounter[K comparable]() counter[K] { return counter[K]{ids: map[K]uint32{}} }

// inc counts one entry of k and returns k's id.
func (c *counter[K]) inc(k K) uint32 {
	if id, ok := c.ids[k]; ok {
		c.n[id]++
		return id
	}
	var id uint32
	if l := len(c.free); l > 0 {
		id = c.free[l-1]
		c.free = c.free[:l-1]
		c.keys[id], c.n[id] = k, 1
	} else {
		id = uint32(len(c.keys))
		c.keys = append(c.keys, k)
		c.n = append(c.n, 1)
	}
	c.ids[k] = id
	return id
}

// dec uncounts one entry of the key with id.
func (c *counter[K]) dec(id uint32) {
	c.n[id]--
	if c.n[id] <= 0 {
		var zero K
		delete(c.ids, c.keys[id])
		c.keys[id], c.n[id] = zero, 0
		c.free = append(c.free, id)
	}
}

// distinct is the number of keys counted now.
func (c *counter[K]) distinct() int { return len(c.ids) }

// cand is a key and its count, a candidate for a top table.
type cand[K any] struct {
	key K
	n   int64
}

// best returns the k largest counts, largest first (ties in key order),
// and the sum of all counts.
func (c *counter[K]) best(k int, order func(K, K) int) (best []cand[K], total int64) {
	less := func(x, y cand[K]) int { return cmp.Or(cmp.Compare(y.n, x.n), order(x.key, y.key)) }
	best = make([]cand[K], 0, min(k, c.distinct())+1)
	for id, n := range c.n {
		if n <= 0 {
			continue
		}
		total += n
		if len(best) == k && n < best[k-1].n {
			continue // the usual case, decided without the key
		}
		x := cand[K]{c.keys[id], n}
		if len(best) == k && less(x, best[k-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, x, less)
		best = slices.Insert(best, i, x)
		if len(best) > k {
			best = best[:k]
		}
	}
	return best, total
}

// topRows names the k largest counts as rows, with a row "other"
// summing the rest when there are more keys.
func topRows[K any](best []cand[K], total int64, distinct int, name func(K) string) []Row {
	rows := make([]Row, 0, len(best)+1)
	var shown int64
	for _, b := range best {
		rows = append(rows, Row{Key: name(b.key), Entries: b.n})
		shown += b.n
	}
	if distinct > len(best) {
		rows = append(rows, Row{Key: OtherKey, Entries: total - shown})
	}
	return rows
}

// top returns the k largest counts as rows, and "other".
func (c *counter[K]) top(k int, order func(K, K) int, name func(K) string) []Row {
	best, total := c.best(k, order)
	return topRows(best, total, c.distinct(), name)
}

// addrCounter counts entries by address: IPv4 addresses in a map of their
// own with 4-byte keys (the common case, twice as fast), IPv6 ones (and
// IPv4-mapped ones) by their 16 bytes. An id with v6Bit set is an IPv6
// address's.
type addrCounter struct {
	v4 counter[uint32]
	v6 counter[[16]byte]
}

const v6Bit = 1 << 31

func newAddrCounter() addrCounter {
	return addrCounter{v4: newCounter[uint32](), v6: newCounter[[16]byte]()}
}

func v4key(a addr) uint32 {
	return uint32(a.b[12])<<24 | uint32(a.b[13])<<16 | uint32(a.b[14])<<8 | uint32(a.b[15])
}

func (c *addrCounter) inc(a addr) uint32 {
	if a.v6 {
		return c.v6.inc(a.b) | v6Bit
	}
	return c.v4.inc(v4key(a))
}

func (c *addrCounter) dec(id uint32) {
	if id&v6Bit != 0 {
		c.v6.dec(id &^ v6Bit)
		return
	}
	c.v4.dec(id)
}

func (c *addrCounter) key(id uint32) addr {
	if id&v6Bit != 0 {
		return addr{b: c.v6.keys[id&^v6Bit], v6: true}
	}
	return addrFrom4(c.v4.keys[id])
}

func addrFrom4(k uint32) addr {
	var a addr
	a.b[10], a.b[11] = 0xff, 0xff
	a.b[12], a.b[13], a.b[14], a.b[15] = byte(k>>24), byte(k>>16), byte(k>>8), byte(k)
	return a
}

func (c *addrCounter) distinct() int { return c.v4.distinct() + c.v6.distinct() }

// top returns the k largest counts of both families as rows (IPv4 first
// among equals), and "other".
func (c *addrCounter) top(k int) []Row {
	b4, t4 := c.v4.best(k, cmp.Compare[uint32])
	b6, t6 := c.v6.best(k, func(x, y [16]byte) int { return bytes.Compare(x[:], y[:]) })
	all := make([]cand[addr], 0, len(b4)+len(b6))
	for _, b := range b4 {
		all = append(all, cand[addr]{addrFrom4(b.key), b.n})
	}
	for _, b := range b6 {
		all = append(all, cand[addr]{addr{b: b.key, v6: true}, b.n})
	}
	slices.SortStableFunc(all, func(x, y cand[addr]) int { return cmp.Compare(y.n, x.n) })
	if len(all) > k {
		all = all[:k]
	}
	return topRows(all, t4+t6, c.distinct(), addr.String)
}

// OtherKey is the key of the row that sums a top table's remaining keys.
const OtherKey = "other"

// noSvc is the service id of an entry whose protocol has no ports.
const noSvc = ^uint32(0)

// rec is what the table keeps of one entry: 16 bytes.
type rec struct {
	src, dst, svc uint32 // ids in the table's counters
	proto, state  uint8
	// gen is the listing generation in which the entry was last listed
	// or changed by an event.
	gen uint8
	// quiet: the entry is known from a listing only, no event named it
	// yet. It may be one the kernel made while nobody listened (with
	// net.netfilter.nf_conntrack_events=2 those carry no event cache),
	// and such an entry ends without a destroy event.
	quiet bool
}

// entry is what the table needs of a Flow.
type entry struct {
	src, dst addr
	port     uint16 // the original direction's destination port
	proto    uint8
	state    uint8
	ports    bool // the protocol has ports: the entry has a service
}

func entryOf(f *conntrack.Flow) entry {
	return entry{src: addrOf(f.Orig.Src), dst: addrOf(f.Orig.Dst), port: f.Orig.DstPort,
		proto: uint8(f.Proto), state: f.State, ports: f.Proto.HasPorts()}
}

// stateSlot is the TCP state counter an entry's state goes to.
func stateSlot(s uint8) int { return int(min(s, uint8(conntrack.TCPStateCount))) }

// table is a live picture of a conntrack table: every entry by its
// conntrack ID, and the counts by TCP state, protocol, source,
// destination and service kept with each change.
//
// A listing updates it in place: begin starts a generation, listed
// marks each listed entry, events mark what they change, and sweep
// removes what neither marked — entries that ended without an event.
type table struct {
	gen   uint8 // the current listing generation
	flows map[uint32]rec
	total int64
	proto [256]int64
	state [conntrack.TCPStateCount + 1]int64 // TCP entries; the last slot: unknown states
	src   addrCounter
	dst   addrCounter
	svc   counter[svcKey]
	// quietByTuple finds a quiet entry's ID by its original tuple
	// (tupleKey): a new entry of the same tuple means the quiet one has
	// ended, as the kernel holds one entry per tuple — a TCP connection
	// that reuses the ports of one in TIME_WAIT replaces its entry, and
	// the old entry, made before anyone listened, sends no destroy event.
	// Keys of entries that are no longer quiet stay until the next sweep
	// prunes them; a lookup checks the record. nquiet counts the quiet
	// entries: with none (the usual case once the entries made before the
	// subscription are gone) events pay nothing for this.
	quietByTuple map[uint64]uint32
	nquiet       int
}

// newTable returns an empty table with room for about hint entries.
func newTable(hint int) *table {
	return &table{flows: make(map[uint32]rec, hint), src: newAddrCounter(), dst: newAddrCounter(), svc: newCounter[svcKey]()}
}

// put records entry id as e; for an entry known already only the state
// changes, and only when known (an update without CTA_PROTOINFO says
// nothing of it). It reports whether the entry is new to the table.
// It marks the entry as changed in this generation.
func (t *table) put(id uint32, e entry, hasState bool) bool {
	if old, ok := t.flows[id]; ok {
		if t.same(old, e) {
			if hasState && old.state != e.state {
				t.setState(&old, e.state)
			}
			if old.quiet { // it sends events: its end will be told
				old.quiet = false
				t.unquiet()
			}
			old.gen = t.gen
			t.flows[id] = old
			return false
		}
		// The same ID for another connection: its end was missed.
		t.remove(id)
	}
	t.flows[id] = t.count(e)
	return true
}

// same reports whether a record is of the connection e describes.
func (t *table) same(r rec, e entry) bool {
	return r.proto == e.proto && t.src.key(r.src) == e.src && t.dst.key(r.dst) == e.dst &&
		(r.svc == noSvc || t.svc.keys[r.svc].port == e.port)
}

func (t *table) setState(r *rec, st uint8) {
	if r.proto == uint8(conntrack.TCP) {
		t.state[stateSlot(r.state)]--
		t.state[stateSlot(st)]++
	}
	r.state = st
}

// markQuiet marks entry id, just listed, as known from a listing only,
// its original tuple's key being key.
func (t *table) markQuiet(id uint32, key uint64) {
	r, ok := t.flows[id]
	if !ok {
		return
	}
	if !r.quiet {
		r.quiet = true
		t.flows[id] = r
		t.nquiet++
	}
	if t.quietByTuple == nil {
		t.quietByTuple = make(map[uint64]uint32)
	}
	t.quietByTuple[key] = id
}

// replaceQuiet removes the quiet entry of the original tuple of key, of
// the connection e describes, when there is one other than id: the
// entry id, new, has taken its tuple, so it has ended. It returns the
// removed entry's ID.
func (t *table) replaceQuiet(id uint32, key uint64, e entry) (uint32, bool) {
	old, ok := t.quietByTuple[key]
	if !ok || old == id {
		return 0, false
	}
	delete(t.quietByTuple, key)
	r, ok := t.flows[old]
	if !ok || !r.quiet || !t.same(r, e) {
		return 0, false // a stale key
	}
	t.remove(old)
	return old, true
}

// begin starts a listing: a new generation.
func (t *table) begin() { t.gen++ }

// listed records an entry of the listing under way, unless an event
// changed it since the listing began (the event is as new as the
// listing, or newer). It reports whether the entry was new to the table.
func (t *table) listed(id uint32, e entry) bool {
	old, ok := t.flows[id]
	return t.listedAs(id, e, old, ok)
}

// listedAs is listed with the table's record of id looked up already:
// old, when ok.
func (t *table) listedAs(id uint32, e entry, old rec, ok bool) bool {
	switch {
	case ok && old.gen == t.gen:
		return false
	case ok && t.same(old, e):
		if old.state != e.state {
			t.setState(&old, e.state)
		}
		old.gen = t.gen
		t.flows[id] = old
		return false
	case ok:
		t.remove(id)
	}
	t.flows[id] = t.count(e)
	return true
}

// sweep ends a listing: the entries neither listed nor changed by an
// event since it began are gone. It returns how many.
func (t *table) sweep() int {
	n := 0
	for id, r := range t.flows {
		if r.gen != t.gen {
			delete(t.flows, id)
			t.uncount(r)
			n++
		}
	}
	t.pruneQuiet()
	return n
}

// unquiet counts a quiet entry less, dropping the index with the last.
func (t *table) unquiet() {
	if t.nquiet--; t.nquiet == 0 {
		t.quietByTuple = nil
	}
}

// pruneQuiet drops the keys of entries that are no longer quiet.
func (t *table) pruneQuiet() {
	for k, id := range t.quietByTuple {
		if r, ok := t.flows[id]; !ok || !r.quiet {
			delete(t.quietByTuple, k)
		}
	}
}

// count adds an entry's counts and returns its record, marked in this
// generation.
func (t *table) count(e entry) rec {
	r := rec{proto: e.proto, state: e.state, svc: noSvc, gen: t.gen}
	r.src = t.src.inc(e.src)
	r.dst = t.dst.inc(e.dst)
	if e.ports {
		r.svc = t.svc.inc(svcKey{a: e.dst, port: e.port, proto: e.proto})
	}
	t.total++
	t.proto[e.proto]++
	if e.proto == uint8(conntrack.TCP) {
		t.state[stateSlot(e.state)]++
	}
	return r
}

// uncount takes a record's counts back.
func (t *table) uncount(r rec) {
	if r.quiet {
		t.unquiet()
	}
	t.total--
	t.proto[r.proto]--
	if r.proto == uint8(conntrack.TCP) {
		t.state[stateSlot(r.state)]--
	}
	t.src.dec(r.src)
	t.dst.dec(r.dst)
	if r.svc != noSvc {
		t.svc.dec(r.svc)
	}
}

// remove forgets entry id; it reports whether the table had it.
func (t *table) remove(id uint32) bool {
	r, ok := t.flows[id]
	if !ok {
		return false
	}
	delete(t.flows, id)
	t.uncount(r)
	return true
}

// breakdown is a table's rows, without deltas.
type breakdown struct {
	total                   int64
	byState, byProto        []Row
	sources, dests, service []Row
}

// rows returns the table's breakdown with top tables of k rows (and
// "other").
func (t *table) rows(k int) breakdown {
	b := breakdown{total: t.total}
	for s, n := range t.state {
		if n > 0 {
			name := conntrack.TCPState(s).String()
			if s == int(conntrack.TCPStateCount) {
				name = "UNKNOWN"
			}
			b.byState = append(b.byState, Row{Key: name, Entries: n})
		}
	}
	for p, n := range t.proto {
		if n <= 0 {
			continue
		}
		name := conntrack.Proto(p).String()
		if i := slices.IndexFunc(b.byProto, func(r Row) bool { return r.Key == name }); i >= 0 {
			b.byProto[i].Entries += n // protocols without a tracker are all "unknown"
		} else {
			b.byProto = append(b.byProto, Row{Key: name, Entries: n})
		}
	}
	sortRows(b.byState)
	sortRows(b.byProto)
	b.sources = t.src.top(k)
	b.dests = t.dst.top(k)
	b.service = t.svc.top(k, cmpSvc, svcKey.String)
	return b
}

// sortRows orders rows largest first, then by key.
func sortRows(rows []Row) {
	slices.SortFunc(rows, func(x, y Row) int { return cmp.Or(cmp.Compare(y.Entries, x.Entries), cmp.Compare(x.Key, y.Key)) })
}
