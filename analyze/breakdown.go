package analyze

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// AddrCount is one row of a top-addresses table.
type AddrCount struct {
	Addr  string `json:"addr"`
	Count int64  `json:"count"`
}

// ServiceCount is one row of the top-services table: the original
// direction's protocol and destination port.
type ServiceCount struct {
	Proto string `json:"proto"`
	Port  uint16 `json:"port"`
	Count int64  `json:"count"`
	// Loopback counts the entries of this service on loopback addresses.
	Loopback int64 `json:"loopback"`
	// TimeWait counts the entries in TIME_WAIT (TCP).
	TimeWait int64 `json:"time_wait"`
	// Unreplied counts the entries without a reply.
	Unreplied int64 `json:"unreplied"`
}

// TTLBuckets are the labels of the remaining-lifetime histogram, shortest first.
var TTLBuckets = []string{"<10s", "10s-1m", "1m-5m", "5m-1h", "1h-1d", ">=1d"}

var ttlBounds = []uint32{10, 60, 300, 3600, 86400}

// Breakdown is the result of one pass over a table.
type Breakdown struct {
	Total     int64            `json:"total"`
	L3        map[string]int64 `json:"l3"`
	L4        map[string]int64 `json:"l4"`
	TCPState  map[string]int64 `json:"tcp_state"`
	Status    map[string]int64 `json:"status"`
	Loopback  int64            `json:"loopback"`
	NAT       int64            `json:"nat"`
	Unreplied map[string]int64 `json:"unreplied_by_l4"`
	// TopSources and TopDestinations count the original direction's addresses.
	TopSources      []AddrCount      `json:"top_sources"`
	TopDestinations []AddrCount      `json:"top_destinations"`
	TopServices     []ServiceCount   `json:"top_services"`
	Zones           map[string]int64 `json:"zones"`
	Marks           map[string]int64 `json:"marks"`
	// TTL is the remaining-lifetime histogram keyed by [TTLBuckets].
	TTL map[string]int64 `json:"ttl_seconds"`
	// IdleEstablished counts ESTABLISHED entries idle for longer than the
	// host's TCP keepalive would take to notice a dead peer (only computed
	// when the timeouts are known; entries on the short timeout for data in
	// flight are not counted).
	IdleEstablished int64 `json:"idle_established"`
	// DistinctSources is the number of distinct original source addresses.
	DistinctSources int64 `json:"distinct_sources"`
	// TopTuples counts TCP entries per source address, destination address
	// and destination port, largest first: what shows a client running out
	// of local ports.
	TopTuples []TupleCount `json:"top_tuples"`
}

// Accumulator builds a Breakdown one flow at a time. Its memory grows with
// the number of distinct addresses and services, never with the number of
// entries (the per-tuple counts are bounded, see tupleSummary), and no flow
// is retained. Make one with NewAccumulator.
type Accumulator struct {
	TopN int // rows in the top tables (default 10)

	// IdleAfter, when > 0, makes ESTABLISHED entries whose remaining timeout
	// is below it, and above IdleAbove, count as idle (see
	// Breakdown.IdleEstablished and IdleWindow).
	IdleAfter, IdleAbove uint32

	total, loopback, nat, idle int64
	l3                         [256]int64
	l4                         [256]int64
	unreplied                  [256]int64
	tcpState                   [conntrack.TCPStateCount + 1]int64
	assured, unrepl, seenReply int64
	unreplNotAssured           int64
	offload, hwOffload, dying  int64
	ttl                        [6]int64
	src4, dst4                 map[uint32]uint32
	src6, dst6                 map[[16]byte]uint32
	services                   map[uint32]*svc
	zones                      map[uint16]int64
	marks                      map[uint32]int64
	marksOther                 int64
	tuples                     tupleSummary
}

type svc struct{ count, loopback, timeWait, unreplied int64 }

// maxMarks bounds the distinct marks tracked; the rest count as "other".
const maxMarks = 1024

// NewAccumulator returns an empty Accumulator.
func NewAccumulator() *Accumulator {
	return &Accumulator{
		TopN:     10,
		src4:     make(map[uint32]uint32),
		dst4:     make(map[uint32]uint32),
		src6:     make(map[[16]byte]uint32),
		dst6:     make(map[[16]byte]uint32),
		services: make(map[uint32]*svc),
		zones:    make(map[uint16]int64),
		marks:    make(map[uint32]int64),
		tuples:   newTupleSummary(),
	}
}

func addrKey4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Add counts one flow.
func (a *Accumulator) Add(f *conntrack.Flow) {
	a.total++
	a.l3[f.Family]++
	a.l4[f.Proto]++
	loop := f.Loopback()
	if loop {
		a.loopback++
	}
	if f.NAT() {
		a.nat++
	}
	unreplied := f.Unreplied()
	if unreplied {
		a.unrepl++
		a.unreplied[f.Proto]++
	} else {
		a.seenReply++
	}
	if f.Status&conntrack.StatusAssured != 0 {
		a.assured++
	} else if unreplied {
		a.unreplNotAssured++
	}
	if f.Status&conntrack.StatusOffload != 0 {
		a.offload++
	}
	if f.Status&conntrack.StatusHWOffload != 0 {
		a.hwOffload++
	}
	if f.Status&conntrack.StatusDying != 0 {
		a.dying++
	}
	timeWait := false
	if f.Proto == conntrack.TCP {
		st := f.State
		if int(st) >= len(a.tcpState)-1 {
			st = uint8(len(a.tcpState) - 1)
		}
		a.tcpState[st]++
		timeWait = st == uint8(conntrack.TCPTimeWait)
		if st == uint8(conntrack.TCPEstablished) && a.IdleAfter > 0 && f.Timeout < a.IdleAfter && f.Timeout > a.IdleAbove {
			a.idle++
		}
		a.tuples.add(tupleKey{src: f.Orig.Src.As16(), dst: f.Orig.Dst.As16(), port: f.Orig.DstPort}, timeWait)
	}
	i := 0
	for i < len(ttlBounds) && f.Timeout >= ttlBounds[i] {
		i++
	}
	a.ttl[i]++
	if f.Orig.Src.Is4() {
		a.src4[addrKey4(f.Orig.Src)]++
	} else {
		a.src6[f.Orig.Src.As16()]++
	}
	if f.Orig.Dst.Is4() {
		a.dst4[addrKey4(f.Orig.Dst)]++
	} else {
		a.dst6[f.Orig.Dst.As16()]++
	}
	if f.Proto.HasPorts() {
		k := uint32(f.Proto)<<16 | uint32(f.Orig.DstPort)
		s := a.services[k]
		if s == nil {
			s = &svc{}
			a.services[k] = s
		}
		s.count++
		if loop {
			s.loopback++
		}
		if timeWait {
			s.timeWait++
		}
		if unreplied {
			s.unreplied++
		}
	}
	a.zones[f.Zone]++
	if _, ok := a.marks[f.Mark]; ok || len(a.marks) < maxMarks {
		a.marks[f.Mark]++
	} else {
		a.marksOther++
	}
}

// Merge adds the counts of b into a.
func (a *Accumulator) Merge(b *Accumulator) {
	a.total += b.total
	a.loopback += b.loopback
	a.nat += b.nat
	a.idle += b.idle
	for i := range a.l3 {
		a.l3[i] += b.l3[i]
		a.l4[i] += b.l4[i]
		a.unreplied[i] += b.unreplied[i]
	}
	for i := range a.tcpState {
		a.tcpState[i] += b.tcpState[i]
	}
	a.assured += b.assured
	a.unrepl += b.unrepl
	a.seenReply += b.seenReply
	a.unreplNotAssured += b.unreplNotAssured
	a.offload += b.offload
	a.hwOffload += b.hwOffload
	a.dying += b.dying
	for i := range a.ttl {
		a.ttl[i] += b.ttl[i]
	}
	for k, v := range b.src4 {
		a.src4[k] += v
	}
	for k, v := range b.dst4 {
		a.dst4[k] += v
	}
	for k, v := range b.src6 {
		a.src6[k] += v
	}
	for k, v := range b.dst6 {
		a.dst6[k] += v
	}
	for k, v := range b.services {
		s := a.services[k]
		if s == nil {
			s = &svc{}
			a.services[k] = s
		}
		s.count += v.count
		s.loopback += v.loopback
		s.timeWait += v.timeWait
		s.unreplied += v.unreplied
	}
	for k, v := range b.zones {
		a.zones[k] += v
	}
	for k, v := range b.marks {
		a.marks[k] += v
	}
	a.marksOther += b.marksOther
	a.tuples.merge(&b.tuples)
}

func topAddrs(m4 map[uint32]uint32, m6 map[[16]byte]uint32, n int) []AddrCount {
	type row struct {
		addr  netip.Addr
		count uint32
	}
	// Keep the n largest with a simple bounded insertion: n is small.
	var top []row
	consider := func(a func() netip.Addr, c uint32) {
		if len(top) == n && c < top[n-1].count {
			return
		}
		r := row{a(), c}
		i, _ := slices.BinarySearchFunc(top, r, func(x, y row) int {
			if x.count != y.count {
				return cmp.Compare(y.count, x.count)
			}
			return x.addr.Compare(y.addr)
		})
		if i >= n {
			return
		}
		top = slices.Insert(top, i, r)
		if len(top) > n {
			top = top[:n]
		}
	}
	for k, c := range m4 {
		consider(func() netip.Addr {
			return netip.AddrFrom4([4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)})
		}, c)
	}
	for k, c := range m6 {
		consider(func() netip.Addr { return netip.AddrFrom16(k) }, c)
	}
	out := make([]AddrCount, len(top))
	for i, r := range top {
		out[i] = AddrCount{Addr: r.addr.String(), Count: int64(r.count)}
	}
	return out
}

// Breakdown returns the counts so far.
func (a *Accumulator) Breakdown() Breakdown {
	n := a.TopN
	if n <= 0 {
		n = 10
	}
	b := Breakdown{
		Total:           a.total,
		L3:              map[string]int64{},
		L4:              map[string]int64{},
		TCPState:        map[string]int64{},
		Unreplied:       map[string]int64{},
		Loopback:        a.loopback,
		NAT:             a.nat,
		Zones:           map[string]int64{},
		Marks:           map[string]int64{},
		TTL:             map[string]int64{},
		IdleEstablished: a.idle,
		DistinctSources: int64(len(a.src4) + len(a.src6)),
		Status: map[string]int64{
			"assured": a.assured, "unreplied": a.unrepl, "seen_reply": a.seenReply,
			"unreplied_not_assured": a.unreplNotAssured,
			"offload":               a.offload, "hw_offload": a.hwOffload, "dying": a.dying,
		},
		TopSources:      topAddrs(a.src4, a.src6, n),
		TopDestinations: topAddrs(a.dst4, a.dst6, n),
		TopTuples:       a.tuples.top(n),
	}
	for i, c := range a.l3 {
		if c > 0 {
			b.L3[conntrack.Family(i).String()] += c
		}
	}
	for i, c := range a.l4 {
		if c > 0 {
			b.L4[conntrack.Proto(i).String()] += c
		}
		if u := a.unreplied[i]; u > 0 {
			b.Unreplied[conntrack.Proto(i).String()] += u
		}
	}
	for i, c := range a.tcpState {
		if c > 0 {
			b.TCPState[conntrack.TCPState(i).String()] = c
		}
	}
	for i, c := range a.ttl {
		b.TTL[TTLBuckets[i]] = c
	}
	for z, c := range a.zones {
		b.Zones[itoa(int64(z))] = c
	}
	for m, c := range a.marks {
		b.Marks[itoa(int64(m))] = c
	}
	if a.marksOther > 0 {
		b.Marks["other"] = a.marksOther
	}
	svcs := make([]ServiceCount, 0, len(a.services))
	for k, s := range a.services {
		svcs = append(svcs, ServiceCount{Proto: conntrack.Proto(k >> 16).String(), Port: uint16(k),
			Count: s.count, Loopback: s.loopback, TimeWait: s.timeWait, Unreplied: s.unreplied})
	}
	slices.SortFunc(svcs, func(x, y ServiceCount) int {
		if x.Count != y.Count {
			return cmp.Compare(y.Count, x.Count)
		}
		if x.Proto != y.Proto {
			return cmp.Compare(x.Proto, y.Proto)
		}
		return cmp.Compare(x.Port, y.Port)
	})
	if len(svcs) > n {
		svcs = svcs[:n]
	}
	b.TopServices = svcs
	return b
}
