package sim

import "math/bits"

// The timing wheel: three levels of 1024 slots (ticks of 1 ms, then 1.024 s,
// then 17.5 min) and a heap for anything further than 12 days ahead.
// Entries are connection indices; adding and removing is O(1), and an entry
// is moved down a level at most twice. No closures, no per-event
// allocation: slot slices keep their capacity from one turn to the next.
const (
	wheelBits  = 10
	wheelSize  = 1 << wheelBits
	wheelMask  = wheelSize - 1
	wheelWords = wheelSize / 64
)

type wentry struct {
	at  int64
	idx uint32
}

type wheel struct {
	now  int64 // the current tick: everything before it has run
	l0   [wheelSize][]uint32
	bits [wheelWords]uint64 // non-empty l0 slots
	l0n  int
	up   [2][wheelSize][]wentry // levels 1 and 2
	upn  [2]int
	far  []wentry // min-heap by at
}

// add schedules idx at tick at (the current tick if at is in the past).
func (w *wheel) add(at int64, idx uint32) {
	if at < w.now {
		at = w.now
	}
	switch {
	case at>>wheelBits == w.now>>wheelBits:
		s := at & wheelMask
		w.l0[s] = append(w.l0[s], idx)
		w.bits[s>>6] |= 1 << (s & 63)
		w.l0n++
	case at>>(2*wheelBits) == w.now>>(2*wheelBits):
		s := (at >> wheelBits) & wheelMask
		w.up[0][s] = append(w.up[0][s], wentry{at, idx})
		w.upn[0]++
	case at>>(3*wheelBits) == w.now>>(3*wheelBits):
		s := (at >> (2 * wheelBits)) & wheelMask
		w.up[1][s] = append(w.up[1][s], wentry{at, idx})
		w.upn[1]++
	default:
		w.push(wentry{at, idx})
	}
}

// len returns the number of scheduled entries.
func (w *wheel) len() int { return w.l0n + w.upn[0] + w.upn[1] + len(w.far) }

// next returns the earliest tick ≥ now that needs a visit: one with entries,
// or a block boundary where entries move down a level. It returns -1 when
// nothing is scheduled.
func (w *wheel) next() int64 {
	if w.len() == 0 {
		return -1
	}
	if w.l0n > 0 {
		s := w.now & wheelMask
		word := s >> 6
		m := w.bits[word] &^ (1<<(s&63) - 1)
		for {
			if m != 0 {
				return w.now&^wheelMask | word<<6 | int64(bits.TrailingZeros64(m))
			}
			word++
			if word == wheelWords {
				break
			}
			m = w.bits[word]
		}
	}
	// Nothing left in this block: the next boundary whose level-1 slot holds
	// entries (or that is a level-2 boundary).
	b := (w.now>>wheelBits + 1) << wheelBits
	for b&(1<<(2*wheelBits)-1) != 0 && len(w.up[0][(b>>wheelBits)&wheelMask]) == 0 {
		b += wheelSize
	}
	return b
}

// advance moves to tick t (≥ now, and no later than next()), cascading
// the upper levels at the boundaries crossed.
func (w *wheel) advance(t int64) {
	for w.now < t {
		// Jump straight to t when no boundary lies between.
		nb := (w.now>>wheelBits + 1) << wheelBits
		if t < nb {
			w.now = t
			return
		}
		w.now = nb
		w.cascade()
	}
}

// cascade moves the entries due in the block that starts at now down a level.
func (w *wheel) cascade() {
	if w.now&(1<<(3*wheelBits)-1) == 0 {
		for len(w.far) > 0 && w.far[0].at>>(3*wheelBits) == w.now>>(3*wheelBits) {
			e := w.pop()
			w.add(e.at, e.idx)
		}
	}
	if w.now&(1<<(2*wheelBits)-1) == 0 {
		s := (w.now >> (2 * wheelBits)) & wheelMask
		list := w.up[1][s]
		w.up[1][s] = list[:0]
		w.upn[1] -= len(list)
		for _, e := range list {
			w.add(e.at, e.idx)
		}
	}
	s := (w.now >> wheelBits) & wheelMask
	list := w.up[0][s]
	w.up[0][s] = list[:0]
	w.upn[0] -= len(list)
	for _, e := range list {
		w.add(e.at, e.idx)
	}
}

// take returns the entries due at the current tick and empties the slot;
// the caller hands the slice back with done once it has run them.
func (w *wheel) take() []uint32 {
	s := w.now & wheelMask
	list := w.l0[s]
	if len(list) == 0 {
		return nil
	}
	w.l0[s] = nil
	w.bits[s>>6] &^= 1 << (s & 63)
	w.l0n -= len(list)
	return list
}

// done gives a slot slice back for reuse.
func (w *wheel) done(list []uint32) {
	s := w.now & wheelMask
	if w.l0[s] == nil {
		w.l0[s] = list[:0]
	}
}

func (w *wheel) push(e wentry) {
	w.far = append(w.far, e)
	i := len(w.far) - 1
	for i > 0 {
		p := (i - 1) / 2
		if w.far[p].at <= w.far[i].at {
			break
		}
		w.far[p], w.far[i] = w.far[i], w.far[p]
		i = p
	}
}

func (w *wheel) pop() wentry {
	h := w.far
	e := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	w.far = h
	return e
}
