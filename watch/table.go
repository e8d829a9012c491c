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

// top returns the k largest counts, largest first (ties in key order),
// and a row "other" summing the rest when there are more keys.
func (c *counter[K]) top(k int, order func(K, K) int, name func(K) string) []Row {
	type cand struct {
		key K
		n   int64
	}
	less := func(x, y cand) int { return cmp.Or(cmp.Compare(y.n, x.n), order(x.key, y.key)) }
	best := make([]cand, 0, min(k, c.distinct())+1)
	var total int64
	for id, n := range c.n {
		if n <= 0 {
			continue
		}
		total += n
		x := cand{c.keys[id], n}
		if len(best) == k && less(x, best[k-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, x, less)
		best = slices.Insert(best, i, x)
		if len(best) > k {
			best = best[:k]
		}
	}
	rows := make([]Row, 0, len(best)+1)
	var shown int64
	for _, b := range best {
		rows = append(rows, Row{Key: name(b.key), Entries: b.n})
		shown += b.n
	}
	if c.distinct() > len(best) {
		rows = append(rows, Row{Key: OtherKey, Entries: total - shown})
	}
	return rows
}

// OtherKey is the key of the row that sums a top table's remaining keys.
const OtherKey = "other"

// noSvc is the service id of an entry whose protocol has no ports.
const noSvc = ^uint32(0)

// rec is what the table keeps of one entry: 16 bytes.
type rec struct {
	src, dst, svc uint32 // ids in the table's counters
	proto, state  uint8
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
type table struct {
	flows map[uint32]rec
	total int64
	proto [256]int64
	state [conntrack.TCPStateCount + 1]int64 // TCP entries; the last slot: unknown states
	src   counter[addr]
	dst   counter[addr]
	svc   counter[svcKey]
}

// newTable returns an empty table with room for about hint entries.
func newTable(hint int) *table {
	return &table{flows: make(map[uint32]rec, hint), src: newCounter[addr](), dst: newCounter[addr](), svc: newCounter[svcKey]()}
}

// put records entry id as e; for an entry known already only the state
// changes, and only when known (an update without CTA_PROTOINFO says
// nothing of it). It reports whether the entry is new to the table.
func (t *table) put(id uint32, e entry, hasState bool) bool {
	if old, ok := t.flows[id]; ok {
		if old.proto == e.proto && t.src.keys[old.src] == e.src && t.dst.keys[old.dst] == e.dst &&
			(old.svc == noSvc || t.svc.keys[old.svc].port == e.port) {
			if hasState && old.state != e.state {
				if old.proto == uint8(conntrack.TCP) {
					t.state[stateSlot(old.state)]--
					t.state[stateSlot(e.state)]++
				}
				old.state = e.state
				t.flows[id] = old
			}
			return false
		}
		// The same ID for another connection: its end was missed.
		t.remove(id)
	}
	r := rec{proto: e.proto, state: e.state, svc: noSvc}
	r.src = t.src.inc(e.src)
	r.dst = t.dst.inc(e.dst)
	if e.ports {
		r.svc = t.svc.inc(svcKey{a: e.dst, port: e.port, proto: e.proto})
	}
	t.flows[id] = r
	t.total++
	t.proto[e.proto]++
	if e.proto == uint8(conntrack.TCP) {
		t.state[stateSlot(e.state)]++
	}
	return true
}

// remove forgets entry id; it reports whether the table had it.
func (t *table) remove(id uint32) bool {
	r, ok := t.flows[id]
	if !ok {
		return false
	}
	delete(t.flows, id)
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
	b.sources = t.src.top(k, cmpAddr, addr.String)
	b.dests = t.dst.top(k, cmpAddr, addr.String)
	b.service = t.svc.top(k, cmpSvc, svcKey.String)
	return b
}

// sortRows orders rows largest first, then by key.
func sortRows(rows []Row) {
	slices.SortFunc(rows, func(x, y Row) int { return cmp.Or(cmp.Compare(y.Entries, x.Entries), cmp.Compare(x.Key, y.Key)) })
}
