package analyze

import (
	"cmp"
	"net/netip"
	"slices"
)

// TupleCount is one row of the top-tuples table: the TCP entries from one
// source address to one destination address and port — the part of a
// connection's tuple that only the client's local port varies within. A
// client can hold at most as many of them at once as its local port range
// has ports (see the local-ports-exhausted finding).
type TupleCount struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Port  uint16 `json:"port"`
	Count int64  `json:"count"`
	// TimeWait counts the entries in TIME_WAIT.
	TimeWait int64 `json:"time_wait"`
	// Error bounds the counting error: the true count is between Count
	// and Count + Error, the true TIME_WAIT count between TimeWait and
	// TimeWait + Error. It is 0 (exact) unless the table holds more
	// distinct tuples than the accumulator keeps counters for (maxTuples).
	Error int64 `json:"error,omitempty"`
}

// maxTuples bounds the tuples the accumulator keeps counters for at once.
const maxTuples = 4096

// tupleKey is a TCP entry's source address, destination address and
// destination port (original direction); IPv4 addresses are stored
// IPv4-mapped.
type tupleKey struct {
	src, dst [16]byte
	port     uint16
}

type tupleCounter struct {
	key tupleKey
	// c is the Misra–Gries counter: incremented per entry, decremented by
	// every round; the counter is freed when it reaches 0.
	c int64
	// n and timeWait count the entries (and those in TIME_WAIT) since the
	// key got this counter: lower bounds of its true counts.
	n, timeWait int64
}

// tupleSummary counts TCP entries per tupleKey in bounded memory, with the
// Misra–Gries "frequent items" algorithm (Misra and Gries, "Finding
// repeated elements", 1982).
//
// A plain map would grow with the number of distinct (source, destination,
// port) triples: a server with 1M entries from 1M distinct clients means
// 1M keys, ~100 MB. The summary keeps at most maxTuples counters (~400 KiB).
// While there is room every key is counted exactly. When a new key finds
// no free counter, a round decrements every counter by one (freeing those
// that reach zero) and the new entry is not counted; rounds counts them.
// A key's true count f then satisfies n ≤ f ≤ c + rounds, and every key with
// f > N / (maxTuples + 1) among N entries holds a counter at the end. Each
// round removes one unit from each of maxTuples counters, units that
// increments put there, so all rounds together cost O(N): the summary adds
// one map operation per entry, amortised.
//
// What it is for: a client that has exhausted its local port range holds
// tens of thousands of entries for one triple (28,232 with Linux's default
// range) — far above N / 4097 for any table up to 100M entries — and a
// conntrack dump lists entries in hash order, so such a key shows up among
// the first entries, while the summary still has room, and its count is
// exact or very nearly so.
type tupleSummary struct {
	m      map[tupleKey]int32 // key → index in slots
	slots  []tupleCounter
	free   []int32 // unused slots
	rounds int64
}

func newTupleSummary() tupleSummary {
	return tupleSummary{m: make(map[tupleKey]int32)}
}

// add counts one entry of key.
func (s *tupleSummary) add(key tupleKey, timeWait bool) {
	var tw int64
	if timeWait {
		tw = 1
	}
	if i, ok := s.m[key]; ok {
		c := &s.slots[i]
		c.c++
		c.n++
		c.timeWait += tw
		return
	}
	if i, ok := s.alloc(); ok {
		s.slots[i] = tupleCounter{key: key, c: 1, n: 1, timeWait: tw}
		s.m[key] = i
		return
	}
	s.decrement(1)
}

// alloc returns a free slot, if any.
func (s *tupleSummary) alloc() (int32, bool) {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i, true
	}
	if len(s.slots) < maxTuples {
		s.slots = append(s.slots, tupleCounter{})
		return int32(len(s.slots) - 1), true
	}
	return 0, false
}

// decrement takes v from every counter, freeing those that reach zero.
func (s *tupleSummary) decrement(v int64) {
	s.rounds += v
	for i := range s.slots {
		c := &s.slots[i]
		if c.c <= 0 {
			continue // free
		}
		c.c -= v
		if c.c <= 0 {
			c.c = 0
			delete(s.m, c.key)
			s.free = append(s.free, int32(i))
		}
	}
}

// merge adds the counts of o (Agarwal et al., "Mergeable summaries", 2012):
// counters of the same key add up; then, if more than maxTuples keys are
// left, the (maxTuples+1)-th largest counter value is taken from all.
func (s *tupleSummary) merge(o *tupleSummary) {
	s.rounds += o.rounds
	var extra []tupleCounter
	for _, oc := range o.slots {
		if oc.c <= 0 {
			continue
		}
		if i, ok := s.m[oc.key]; ok {
			c := &s.slots[i]
			c.c += oc.c
			c.n += oc.n
			c.timeWait += oc.timeWait
		} else if i, ok := s.alloc(); ok {
			s.slots[i] = oc
			s.m[oc.key] = i
		} else {
			extra = append(extra, oc)
		}
	}
	if len(extra) == 0 {
		return
	}
	// Too many keys: rank all, keep the maxTuples largest minus the next one.
	all := extra
	for _, c := range s.slots {
		if c.c > 0 {
			all = append(all, c)
		}
	}
	slices.SortFunc(all, func(x, y tupleCounter) int { return cmp.Compare(y.c, x.c) })
	v := all[maxTuples].c
	s.rounds += v
	clear(s.m)
	s.slots, s.free = s.slots[:0], s.free[:0]
	for _, c := range all[:maxTuples] {
		if c.c -= v; c.c > 0 {
			s.m[c.key] = int32(len(s.slots))
			s.slots = append(s.slots, c)
		}
	}
}

// top returns the n largest counts, largest first.
func (s *tupleSummary) top(n int) []TupleCount {
	rows := make([]TupleCount, 0, len(s.m))
	for _, c := range s.slots {
		if c.c <= 0 {
			continue
		}
		rows = append(rows, TupleCount{Src: netip.AddrFrom16(c.key.src).Unmap().String(),
			Dst: netip.AddrFrom16(c.key.dst).Unmap().String(), Port: c.key.port,
			Count: c.n, TimeWait: c.timeWait, Error: c.c + s.rounds - c.n})
	}
	slices.SortFunc(rows, func(x, y TupleCount) int {
		if x.Count != y.Count {
			return cmp.Compare(y.Count, x.Count)
		}
		if x.Src != y.Src {
			return cmp.Compare(x.Src, y.Src)
		}
		if x.Dst != y.Dst {
			return cmp.Compare(x.Dst, y.Dst)
		}
		return cmp.Compare(x.Port, y.Port)
	})
	if len(rows) > n {
		rows = rows[:n]
	}
	return rows
}
