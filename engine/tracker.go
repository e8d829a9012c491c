package engine

import (
	"bufio"
	crand "crypto/rand"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Tracker is a connection-tracking table with the kernel's semantics. Safe
// for concurrent use: every method takes one lock.
type Tracker struct {
	mu      sync.Mutex
	clock   Clock
	h       hasher
	rng     *rand.Rand
	buckets []bucket
	slab    slab
	count   int
	counts  Counts
	set     map[string]int64
	to      timeouts
	notrack []NoTrackRule
	stats   [][conntrack.NumStatFields]uint64
	chain   int // Config.ChainLimit

	wheel  [wheelSlots][]uint32 // entry indexes; stale items are skipped
	young  []uint32             // entries created in the current tick
	cursor int64                // the next wheel second to process
	// earlyDropMode is set when a new connection was dropped because
	// nothing could be evicted; the next GC pass then also kills
	// non-ASSURED and closing TCP entries while the table is ≥ 95 % full.
	earlyDropMode bool
}

// The expiry wheel turns in ticks of 2^30 ns (1.07 s): entries are
// deleted within a tick of expiring, as the kernel's GC reaps within a
// fraction of its scan interval.
const (
	wheelSlots = 1024
	tickShift  = 30
	tick       = 1 << tickShift
)

type timeouts struct {
	tcp                  [conntrack.TCPStateCount]int64
	tcpRetrans, tcpUnack int64
	maxRetrans           int
	loose                bool
	udp, udpStream       int64
	icmp, icmpv6         int64
	generic              int64
	gre, greStream       int64
	max                  int
}

// New returns an empty tracker.
func New(cfg Config) (*Tracker, error) {
	t := &Tracker{clock: cfg.Clock, set: DefaultSettings(), chain: cfg.ChainLimit}
	if t.clock == nil {
		t.clock = RealClock()
	}
	for k, v := range cfg.Settings {
		name, err := CanonicalSetting(k)
		if err != nil {
			return nil, err
		}
		if err := checkSetting(name, v); err != nil {
			return nil, err
		}
		t.set[name] = v
	}
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	for i := range t.h.k {
		seed = splitmix(seed)
		t.h.k[i] = seed
	}
	t.rng = rand.New(rand.NewPCG(splitmix(seed), seed))
	cpus := max(cfg.CPUs, 1)
	t.stats = make([][conntrack.NumStatFields]uint64, cpus)
	t.notrack = append([]NoTrackRule(nil), cfg.NoTrack...)
	t.applySettings()
	t.buckets = make([]bucket, t.set[SetBuckets])
	t.cursor = min(int64(t.clock.Now()), maxNow)>>tickShift + 1
	return t, nil
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

func (t *Tracker) applySettings() {
	s := func(name string) int64 { return t.set[name] * int64(time.Second) }
	to := &t.to
	to.tcp[sSS] = s(SetTCPTimeoutSynSent)
	to.tcp[sSR] = s(SetTCPTimeoutSynRecv)
	to.tcp[sES] = s(SetTCPTimeoutEstablished)
	to.tcp[sFW] = s(SetTCPTimeoutFinWait)
	to.tcp[sCW] = s(SetTCPTimeoutCloseWait)
	to.tcp[sLA] = s(SetTCPTimeoutLastAck)
	to.tcp[sTW] = s(SetTCPTimeoutTimeWait)
	to.tcp[sCL] = s(SetTCPTimeoutClose)
	to.tcp[sS2] = 120 * int64(time.Second) // no sysctl: fixed in the kernel
	to.tcpRetrans = s(SetTCPTimeoutMaxRetrans)
	to.tcpUnack = s(SetTCPTimeoutUnacknowledged)
	to.maxRetrans = int(t.set[SetTCPMaxRetrans])
	to.loose = t.set[SetTCPLoose] != 0
	to.udp = s(SetUDPTimeout)
	to.udpStream = s(SetUDPTimeoutStream)
	to.icmp = s(SetICMPTimeout)
	to.icmpv6 = s(SetICMPv6Timeout)
	to.generic = s(SetGenericTimeout)
	to.gre = s(SetGRETimeout)
	to.greStream = s(SetGRETimeoutStream)
	to.max = int(t.set[SetMax])
}

// Settings returns every setting's current value.
func (t *Tracker) Settings() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int64, len(t.set))
	for k, v := range t.set {
		m[k] = v
	}
	return m
}

// Set changes one setting at run time, as writing the sysctl would: new
// timeouts apply from each entry's next packet, a new bucket count rehashes
// the table, and lowering the maximum evicts nothing (new connections
// are refused until the count falls below it).
func (t *Tracker) Set(name string, v int64) error {
	name, err := CanonicalSetting(name)
	if err != nil {
		return err
	}
	if err := checkSetting(name, v); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.set[name] = v
	t.applySettings()
	if name == SetBuckets && int(v) != len(t.buckets) {
		t.rehash(int(v))
	}
	return nil
}

func (t *Tracker) rehash(n int) {
	t.buckets = make([]bucket, n)
	for i := uint32(0); i < t.slab.used; i++ {
		e := t.slab.at(i)
		if e.flags&eLive == 0 {
			continue
		}
		rk := invert(&e.k)
		t.linkNode(mkRef(i, Original), t.h.hash(&e.k))
		t.linkNode(mkRef(i, Reply), t.h.hash(&rk))
	}
}

// linkNode inserts a node, whose tuple hashes to h, at the head of its chain.
func (t *Tracker) linkNode(r nodeRef, h uint32) {
	b := &t.buckets[bucketOf(h, len(t.buckets))]
	*t.slab.node(r) = node{next: b.head, hash: b.hash}
	n := b.len()
	if n < lenBits {
		n++
	}
	b.head, b.second, b.hash, b.tag2len = r, b.head, h, b.hash&^lenBits|n
}

// unlinkNode removes a node whose tuple hashes to h from its chain.
func (t *Tracker) unlinkNode(r nodeRef, h uint32) {
	n := t.slab.node(r)
	b := &t.buckets[bucketOf(h, len(t.buckets))]
	switch r {
	case b.head:
		b.head, b.hash = n.next, n.hash
		b.setSecond(0, 0)
		if b.head != 0 {
			hn := t.slab.node(b.head)
			b.setSecond(hn.next, hn.hash)
		}
	case b.second:
		*t.slab.node(b.head) = *n
		b.setSecond(n.next, n.hash)
	default:
		for p := b.second; p != 0; {
			pn := t.slab.node(p)
			if pn.next == r {
				*pn = *n
				break
			}
			p = pn.next
		}
	}
	l := b.len()
	if l == lenBits {
		l = uint32(min(t.walkLen(b), lenBits))
	} else {
		l--
	}
	b.tag2len = b.tag2len&^lenBits | l
}

// chainLen returns the length of a bucket's chain: kept in the bucket (up
// to 254) so an insert need not walk the chain it joins.
func (t *Tracker) chainLen(b *bucket) int {
	if n := b.len(); n < lenBits {
		return int(n)
	}
	return t.walkLen(b)
}

func (t *Tracker) walkLen(b *bucket) int {
	n := 0
	for r := b.head; r != 0; r = t.slab.node(r).next {
		n++
	}
	return n
}

// kill deletes an entry.
func (t *Tracker) kill(idx uint32, e *entry) {
	rk := invert(&e.k)
	t.unlinkNode(mkRef(idx, Original), t.h.hash(&e.k))
	t.unlinkNode(mkRef(idx, Reply), t.h.hash(&rk))
	t.account(e, -1)
	t.count--
	t.slab.release(idx)
}

// account adds (d = 1) or removes (d = -1) an entry from the counts.
func (t *Tracker) account(e *entry, d int) {
	c := &t.counts
	switch conntrack.Proto(e.k.proto) {
	case conntrack.TCP:
		c.TCP[e.state] += d
	case conntrack.UDP, conntrack.UDPLite:
		c.UDP += d
	case conntrack.ICMP, conntrack.ICMPv6:
		c.ICMP += d
	default:
		c.Other += d
	}
	if e.flags&eAssured != 0 {
		c.Assured += d
	}
	if e.flags&eSeenReply == 0 {
		c.Unreplied += d
	}
}

// setStatus sets StatusSeenReply or StatusAssured on an entry.
func (t *Tracker) setStatus(e *entry, s conntrack.Status) {
	switch s {
	case conntrack.StatusAssured:
		if e.flags&eAssured == 0 {
			e.flags |= eAssured
			t.counts.Assured++
		}
	case conntrack.StatusSeenReply:
		if e.flags&eSeenReply == 0 {
			e.flags |= eSeenReply
			t.counts.Unreplied--
		}
	}
}

func (t *Tracker) setState(e *entry, s uint8) {
	if conntrack.Proto(e.k.proto) == conntrack.TCP && e.state != s {
		t.counts.TCP[e.state]--
		t.counts.TCP[s]++
	}
	e.state = s
}

// refresh sets an entry's timeout and keeps the expiry wheel informed.
func (t *Tracker) refresh(idx uint32, e *entry, now, tmo int64) {
	e.expires = expiryUnits(now, tmo)
	if e.flags&eYoung != 0 {
		return // queued once its first tick ends, at the timeout it has then
	}
	t.schedule(idx, e, now+tmo)
}

// schedule queues an entry that expires at exp (ns) on the wheel, unless
// it is queued at or before that tick already: it is requeued then if
// still alive. Items left behind by requeued or freed entries are skipped
// when their slot comes.
func (t *Tracker) schedule(idx uint32, e *entry, exp int64) {
	sec := (exp + tick - 1) >> tickShift
	sec = min(max(sec, t.cursor), t.cursor+wheelSlots-1)
	if e.flags&eQueued != 0 && int16(e.wheelAt-uint16(sec)) <= 0 {
		return
	}
	e.flags |= eQueued
	e.wheelAt = uint16(sec)
	s := &t.wheel[sec%wheelSlots]
	*s = append(*s, idx)
}

// maxTimeout bounds every timeout (checkSetting's limit), and maxNow the
// clock, so that a time plus a timeout, or the wheel's cursor, never
// overflows.
const (
	maxTimeout = int64(1<<31/1000) * int64(time.Second)
	maxNow     = math.MaxInt64 - maxTimeout - 4*tick
)

// advance runs garbage collection up to now: entries are deleted within a
// second of expiring.
func (t *Tracker) advance(now int64) {
	if now-t.cursor<<tickShift > maxTimeout+2*tick {
		// Every entry was last refreshed before the cursor's time, with a
		// timeout of at most maxTimeout: all have expired. Delete them at
		// once rather than turning the wheel a tick at a time (billions of
		// turns after a jump of decades).
		t.expireAll()
		t.cursor = now>>tickShift + 1
		return
	}
	for t.cursor<<tickShift <= now {
		at := t.cursor << tickShift // the slot's time: entries in it expired by then
		// Entries created during the tick: most short connections have
		// settled in their final state by now, so each is queued once,
		// while its memory is still in cache. (A young entry freed and
		// its slot reused in the same tick has two items here; the first
		// one clears eYoung.)
		for _, idx := range t.young {
			if e := t.slab.at(idx); e.flags&(eLive|eYoung) == eLive|eYoung {
				e.flags &^= eYoung
				t.schedule(idx, e, at+unitsLeft(e.expires, at))
			}
		}
		t.young = t.young[:0]
		slot := &t.wheel[t.cursor%wheelSlots]
		items := *slot
		*slot = items[:0]
		for _, idx := range items {
			e := t.slab.at(idx)
			if e.flags&(eLive|eQueued) != eLive|eQueued || e.wheelAt != uint16(t.cursor) {
				continue // freed, or requeued elsewhere, or a duplicate
			}
			e.flags &^= eQueued
			if left := unitsLeft(e.expires, at); left <= 0 {
				t.kill(idx, e)
			} else {
				t.schedule(idx, e, at+left)
			}
		}
		t.cursor++
		if t.earlyDropMode {
			t.gcEarlyDrop()
		}
	}
}

// expireAll deletes every entry and empties the wheel.
func (t *Tracker) expireAll() {
	for i := uint32(0); i < t.slab.used; i++ {
		if e := t.slab.at(i); e.flags&eLive != 0 {
			t.kill(i, e)
		}
	}
	for i := range t.wheel {
		t.wheel[i] = t.wheel[i][:0]
	}
	t.young = t.young[:0]
	t.earlyDropMode = false
}

// gcEarlyDrop is the GC pass after a failed allocation: while the table is
// at 95 % of its maximum or more, entries that may be dropped early (not
// ASSURED, or TCP closing) are killed.
func (t *Tracker) gcEarlyDrop() {
	t.earlyDropMode = false
	max95 := t.to.max * 95 / 100
	c := &t.counts
	if t.count-c.Assured+c.TCP[sFW]+c.TCP[sCW]+c.TCP[sLA]+c.TCP[sTW]+c.TCP[sCL] == 0 {
		return // nothing could be killed: no need to scan
	}
	for i := uint32(0); i < t.slab.used && t.count >= max95; i++ {
		e := t.slab.at(i)
		if e.flags&eLive == 0 {
			continue
		}
		if canEarlyDrop(e) {
			t.kill(i, e)
		}
	}
}

func canEarlyDrop(e *entry) bool {
	if e.flags&eAssured == 0 {
		return true
	}
	if conntrack.Proto(e.k.proto) == conntrack.TCP {
		switch e.state {
		case sFW, sCW, sLA, sTW, sCL:
			return true
		}
	}
	return false
}

// earlyDrop makes room for a new entry whose original tuple hashes to
// bucket b: from b, up to 8 buckets are scanned; expired entries are reaped
// and every non-ASSURED entry of the first bucket that has one is evicted.
func (t *Tracker) earlyDrop(b int, now int64, st *[conntrack.NumStatFields]uint64) bool {
	var victims [16]uint32
	for i := range 8 {
		bb := (b + i) % len(t.buckets)
		v := victims[:0]
		for r := t.buckets[bb].head; r != 0; {
			idx := refIdx(r)
			e := t.slab.at(idx)
			r = t.slab.node(r).next
			if unitsLeft(e.expires, now) <= 0 || e.flags&eAssured == 0 {
				v = append(v, idx)
			}
		}
		killed := 0
		for _, idx := range v {
			e := t.slab.at(idx)
			if e.flags&eLive == 0 {
				continue // both its nodes were in this bucket
			}
			if unitsLeft(e.expires, now) > 0 {
				killed++
			}
			t.kill(idx, e)
		}
		if killed > 0 {
			st[conntrack.StatEarlyDrop] += uint64(killed)
			return true
		}
	}
	return false
}

func (t *Tracker) statLine(cpu int) *[conntrack.NumStatFields]uint64 {
	if cpu < 0 || cpu >= len(t.stats) {
		cpu = 0
	}
	return &t.stats[cpu]
}

// makeKey builds the packet's tuple in k.
func makeKey(k *key, p *Packet) {
	putAddr(&k.src, p.Src)
	putAddr(&k.dst, p.Dst)
	k.zone, k.proto, k.fam = p.Zone, uint8(p.Proto), uint8(p.Family)
	if k.fam == 0 {
		k.fam = uint8(conntrack.IPv6)
		if p.Src.Is4() {
			k.fam = uint8(conntrack.IPv4)
		}
	}
	switch p.Proto {
	case conntrack.TCP, conntrack.UDP, conntrack.UDPLite, conntrack.SCTP, conntrack.DCCP:
		k.sport, k.dport = p.SrcPort, p.DstPort
	case conntrack.ICMP, conntrack.ICMPv6:
		k.sport, k.dport = p.ICMPID, uint16(p.ICMPType)<<8|uint16(p.ICMPCode)
	default:
		k.sport, k.dport = 0, 0
	}
}

// find looks up tuple k, whose hash is h. It returns the matching node (0
// if none) and the length of the chain. An expired match is deleted and
// not returned.
func (t *Tracker) find(h uint32, k *key, now int64) (nodeRef, int) {
	b := &t.buckets[bucketOf(h, len(t.buckets))]
	if b.head == 0 {
		return 0, 0
	}
	if b.hash == h && t.match(b.head, k) {
		return t.found(b.head, now), 0
	}
	n := 1
	if r := b.second; r != 0 {
		if (b.tag2len^h)&^lenBits == 0 && t.match(r, k) {
			return t.found(r, now), n
		}
		for n++; ; n++ {
			nd := t.slab.node(r)
			if r = nd.next; r == 0 {
				break
			}
			if nd.hash == h && t.match(r, k) {
				return t.found(r, now), n
			}
		}
	}
	return 0, n
}

// match reports whether node r's entry, seen in r's direction, has tuple k.
func (t *Tracker) match(r nodeRef, k *key) bool {
	return keyMatch(&t.slab.at(refIdx(r)).k, k, refDir(r))
}

// found returns node r, or 0 after deleting its entry if it has expired.
func (t *Tracker) found(r nodeRef, now int64) nodeRef {
	e := t.slab.at(refIdx(r))
	if unitsLeft(e.expires, now) <= 0 {
		t.kill(refIdx(r), e)
		return 0
	}
	return r
}

// keyMatch reports whether k is the entry tuple ek seen in direction dir.
func keyMatch(ek, k *key, dir Direction) bool {
	if dir == Original {
		return ek.equal(k)
	}
	if ek.zone != k.zone || ek.proto != k.proto || ek.fam != k.fam {
		return false
	}
	switch conntrack.Proto(k.proto) {
	case conntrack.ICMP, conntrack.ICMPv6:
		if ek.sport != k.sport || uint16(conntrack.ICMPReplyType(conntrack.Proto(k.proto), uint8(ek.dport>>8)))<<8|ek.dport&0xff != k.dport {
			return false
		}
	default:
		if ek.sport != k.dport || ek.dport != k.sport {
			return false
		}
	}
	return ek.src == k.dst && ek.dst == k.src
}

// Process tracks one packet and returns the verdict.
func (t *Tracker) Process(p *Packet) Verdict {
	t.mu.Lock()
	var v Verdict
	t.process(p, t.advanceNow(), &v)
	t.mu.Unlock()
	return v
}

func invalid(v *Verdict, st *[conntrack.NumStatFields]uint64, reason string) {
	st[conntrack.StatInvalid]++
	*v = Verdict{CtInfo: conntrack.CtInvalid, Reason: reason}
}

func (t *Tracker) process(p *Packet, now int64, v *Verdict) {
	st := t.statLine(p.CPU)
	for i := range t.notrack {
		if t.notrack[i].Match(p) {
			v.CtInfo = conntrack.CtUntracked
			return
		}
	}
	switch p.Proto {
	case conntrack.TCP:
		if !tcpValidFlags(p.Flags) {
			invalid(v, st, "invalid tcp flags")
			return
		}
	case conntrack.ICMP, conntrack.ICMPv6:
		if p.Proto == conntrack.ICMPv6 && icmpv6Untracked(p.ICMPType) {
			v.CtInfo = conntrack.CtUntracked
			return
		}
		if icmpIsError(p.Proto, p.ICMPType) {
			t.icmpError(p, now, st, v)
			return
		}
	}
	var k key
	makeKey(&k, p)
	h := t.h.hash(&k)
	ref, chain := t.find(h, &k, now)
	if ref == 0 {
		t.create(p, &k, h, chain, now, st, v)
		return
	}
	idx, dir := refIdx(ref), refDir(ref)
	t.update(p, idx, t.slab.at(idx), dir, false, now, st, v)
}

func (t *Tracker) icmpError(p *Packet, now int64, st *[conntrack.NumStatFields]uint64, v *Verdict) {
	if !p.HasEmbedded {
		st[conntrack.StatError]++
		*v = Verdict{CtInfo: conntrack.CtInvalid, Reason: "ICMP error without the offending header"}
		return
	}
	em := &p.Embedded
	inner := Packet{Family: p.Family, Proto: em.Proto, Src: em.Src, Dst: em.Dst, SrcPort: em.SrcPort, DstPort: em.DstPort,
		ICMPType: em.ICMPType, ICMPCode: em.ICMPCode, ICMPID: em.ICMPID, Zone: p.Zone}
	var ik key
	makeKey(&ik, &inner)
	inv := invert(&ik)
	ref, _ := t.find(t.h.hash(&inv), &inv, now)
	if ref == 0 {
		st[conntrack.StatError]++
		*v = Verdict{CtInfo: conntrack.CtInvalid, Reason: "ICMP error for no tracked connection"}
		return
	}
	e := t.slab.at(refIdx(ref))
	*v = Verdict{CtInfo: conntrack.CtRelated, Dir: refDir(ref), State: e.state, Status: e.status()}
	if v.Dir == Reply {
		v.CtInfo = conntrack.CtRelatedReply
	}
}

// create tracks the first packet of a connection.
func (t *Tracker) create(p *Packet, k *key, h uint32, chain int, now int64, st *[conntrack.NumStatFields]uint64, v *Verdict) {
	switch p.Proto {
	case conntrack.TCP:
		ns := tcpTable[Original][tcpClass(p.Flags)][sNO]
		if ns != sSS && (ns != sES || !t.to.loose) {
			invalid(v, st, "tcp packet without a connection (not a SYN)")
			return
		}
	case conntrack.ICMP, conntrack.ICMPv6:
		if !icmpIsRequest(p.Proto, p.ICMPType) {
			invalid(v, st, "icmp type that cannot start a connection")
			return
		}
	}
	if t.count+1 > t.to.max && !t.earlyDrop(bucketOf(h, len(t.buckets)), now, st) {
		st[conntrack.StatDrop]++
		t.earlyDropMode = true
		*v = Verdict{CtInfo: conntrack.CtInvalid, Drop: true, Reason: "table full"}
		return
	}
	// Confirm: the insert joins both chains, unless one is too long. (The
	// reply tuple cannot clash with another entry without NAT: inverting is
	// an involution, so the lookup of the original tuple, which matches
	// both directions, would have found it.)
	rk := invert(k)
	rh := t.h.hash(&rk)
	rchain := t.chainLen(&t.buckets[bucketOf(rh, len(t.buckets))])
	if limit := t.chainLimit(); limit >= 0 && (chain > limit || rchain > limit) {
		st[conntrack.StatChainTooLong]++
		st[conntrack.StatInsertFailed]++
		*v = Verdict{CtInfo: conntrack.CtInvalid, Drop: true, Reason: "chain too long"}
		return
	}
	idx := t.slab.alloc()
	e := t.slab.at(idx)
	e.k = *k
	e.flags = eLive | eYoung
	t.young = append(t.young, idx)
	t.linkNode(mkRef(idx, Original), h)
	t.linkNode(mkRef(idx, Reply), rh)
	t.count++
	t.account(e, 1)
	t.update(p, idx, e, Original, true, now, st, v)
}

func (t *Tracker) chainLimit() int {
	switch {
	case t.chain > 0:
		return t.chain
	case t.chain < 0:
		return -1
	}
	return 50 + t.rng.IntN(30)
}

// update runs the protocol tracker on an entry for one packet.
func (t *Tracker) update(p *Packet, idx uint32, e *entry, dir Direction, created bool, now int64, st *[conntrack.NumStatFields]uint64, v *Verdict) {
	*v = Verdict{Dir: dir, Created: created, CtInfo: conntrack.CtNew}
	switch {
	case dir == Reply:
		v.CtInfo = conntrack.CtEstablishedReply
	case e.flags&eSeenReply != 0:
		v.CtInfo = conntrack.CtEstablished
	}
	var tmo int64
	switch conntrack.Proto(e.k.proto) {
	case conntrack.TCP:
		old := e.state
		action, ns, to := t.tcpPacket(e, p, dir, old)
		switch action {
		case tcpIgnore:
			// the packet keeps its conntrack: a reply still counts as seen
			if dir == Reply {
				t.setStatus(e, conntrack.StatusSeenReply)
			}
			v.State, v.Status = e.state, e.status()
			return
		case tcpInvalid:
			invalid(v, st, "invalid tcp state transition")
			if created {
				t.kill(idx, e)
			}
			return
		case tcpKill:
			t.kill(idx, e)
			v.Deleted = true
			return
		case tcpReopen:
			t.kill(idx, e)
			t.process(p, now, v)
			v.Deleted = true
			return
		}
		t.setState(e, ns)
		if action == tcpNoRefresh {
			if dir == Reply {
				t.setStatus(e, conntrack.StatusSeenReply)
			}
			v.State, v.Status = e.state, e.status()
			v.Timeout = uint32(max(unitsLeft(e.expires, now), 0) / int64(time.Second))
			return
		}
		tmo = to
	case conntrack.UDPLite, conntrack.GRE:
		// the older rule: any packet after a reply has been seen makes the
		// entry a stream
		tmo = t.to.udp
		stream := t.to.udpStream
		if e.k.proto == uint8(conntrack.GRE) {
			tmo, stream = t.to.gre, t.to.greStream
		}
		if e.flags&eSeenReply != 0 {
			tmo = stream
			t.setStatus(e, conntrack.StatusAssured)
		}
	case conntrack.UDP:
		tmo = t.to.udp
		if created {
			e.tcp.end[0] = expiryUnits(now, 2*int64(time.Second))
		} else {
			if e.tcp.tflags&udpStreamPast == 0 && unitsLeft(e.tcp.end[0], now) < 0 {
				e.tcp.tflags |= udpStreamPast
			}
			if e.flags&eSeenReply != 0 && e.tcp.tflags&udpStreamPast != 0 {
				tmo = t.to.udpStream
				t.setStatus(e, conntrack.StatusAssured)
			}
		}
	case conntrack.ICMP:
		tmo = t.to.icmp
	case conntrack.ICMPv6:
		tmo = t.to.icmpv6
	default:
		tmo = t.to.generic
	}
	t.refresh(idx, e, now, tmo)
	if dir == Reply {
		t.setStatus(e, conntrack.StatusSeenReply)
	}
	v.State, v.Status, v.Timeout = e.state, e.status(), uint32(tmo/int64(time.Second))
}

// Count returns the number of entries (the netns count).
func (t *Tracker) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceNow()
	return t.count
}

func (t *Tracker) advanceNow() int64 {
	now := min(int64(t.clock.Now()), maxNow)
	if t.cursor<<tickShift <= now {
		t.advance(now)
	}
	return now
}

// Counts returns the entries by protocol and state.
func (t *Tracker) Counts() Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceNow()
	c := t.counts
	c.Total = t.count
	return c
}

// Stats returns the per-CPU statistics counters, with the counters a
// current kernel reports marked present.
func (t *Tracker) Stats() []conntrack.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceNow()
	out := make([]conntrack.Stats, len(t.stats))
	for i := range t.stats {
		for _, f := range []conntrack.StatField{conntrack.StatFound, conntrack.StatInvalid, conntrack.StatInsert,
			conntrack.StatInsertFailed, conntrack.StatDrop, conntrack.StatEarlyDrop, conntrack.StatError,
			conntrack.StatSearchRestart, conntrack.StatClashResolve, conntrack.StatChainTooLong} {
			out[i].Set(f, t.stats[i][f])
		}
		out[i].Set(conntrack.StatEntries, uint64(t.count))
	}
	return out
}

// Flows calls fn for every live entry, in table order; it is a
// [conntrack.Source]. The tracker is locked meanwhile: fn must not call
// the tracker.
func (t *Tracker) Flows(fn func(*conntrack.Flow) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.advanceNow()
	var f conntrack.Flow
	for i := uint32(0); i < t.slab.used; i++ {
		e := t.slab.at(i)
		if e.flags&eLive == 0 {
			continue
		}
		if unitsLeft(e.expires, now) <= 0 {
			t.kill(i, e)
			continue
		}
		fillFlow(&f, e, now)
		if err := fn(&f); err != nil {
			return err
		}
	}
	return nil
}

func fillFlow(f *conntrack.Flow, e *entry, now int64) {
	*f = conntrack.Flow{
		Family:  conntrack.Family(e.k.fam),
		Proto:   conntrack.Proto(e.k.proto),
		Timeout: uint32(unitsLeft(e.expires, now) / int64(time.Second)),
		Status:  e.status(),
		Zone:    e.k.zone,
		Use:     1,
	}
	if f.Proto == conntrack.TCP {
		f.State = e.state
	}
	f.Orig = keyTuple(&e.k)
	rk := invert(&e.k)
	f.Reply = keyTuple(&rk)
}

func keyTuple(k *key) conntrack.Tuple {
	tu := conntrack.Tuple{Src: bytesAddr(&k.src, k.fam), Dst: bytesAddr(&k.dst, k.fam)}
	switch conntrack.Proto(k.proto) {
	case conntrack.ICMP, conntrack.ICMPv6:
		tu.ICMPID, tu.ICMPType, tu.ICMPCode = k.sport, uint8(k.dport>>8), uint8(k.dport)
	default:
		tu.SrcPort, tu.DstPort = k.sport, k.dport
	}
	return tu
}

// Lookup finds the entry the packet would match, without changing it, and
// fills f with it.
func (t *Tracker) Lookup(p *Packet, f *conntrack.Flow) (Direction, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.advanceNow()
	var k key
	makeKey(&k, p)
	ref, _ := t.find(t.h.hash(&k), &k, now)
	if ref == 0 {
		return Original, false
	}
	fillFlow(f, t.slab.at(refIdx(ref)), now)
	return refDir(ref), true
}

// Flush deletes every entry and returns how many there were.
func (t *Tracker) Flush() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for i := uint32(0); i < t.slab.used; i++ {
		if e := t.slab.at(i); e.flags&eLive != 0 {
			t.kill(i, e)
			n++
		}
	}
	return n
}

// WriteProc writes the table as /proc/net/nf_conntrack would.
func (t *Tracker) WriteProc(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var line []byte
	err := t.Flows(func(f *conntrack.Flow) error {
		line = f.AppendProc(line[:0])
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// TotalStats returns the statistics summed over CPUs.
func (t *Tracker) TotalStats() conntrack.Stats { return conntrack.SumStats(t.Stats()) }
