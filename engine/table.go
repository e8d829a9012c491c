package engine

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"unsafe"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// key is one direction of a connection, laid out for hashing: 40 bytes,
// no padding. ICMP keeps the id in sport and type<<8|code in dport; the
// generic tracker leaves the ports zero.
type key struct {
	src, dst     [16]byte
	sport, dport uint16
	zone         uint16
	proto        uint8
	fam          uint8
}

const keySize = 40 // unsafe.Sizeof(key{}), checked in a test

// addrWords returns the addresses as four words.
func (k *key) addrWords() *[4]uint64 { return (*[4]uint64)(unsafe.Pointer(k)) }

// tail returns the ports, zone, protocol and family as one word, built
// from the fields: a word load would span the five stores that just wrote
// them, which the CPU cannot forward.
func (k *key) tail() uint64 {
	return uint64(k.sport) | uint64(k.dport)<<16 | uint64(k.zone)<<32 | uint64(k.proto)<<48 | uint64(k.fam)<<56
}

// equal reports whether two keys are the same tuple.
func (k *key) equal(o *key) bool {
	a, b := k.addrWords(), o.addrWords()
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && k.tail() == o.tail()
}

// putAddr stores an address of either family as 16 bytes (IPv4 in its
// IPv4-mapped IPv6 form); the family byte of the key keeps them apart.
// IPv4 goes through As4 and one word store: copying As16's result reads 16
// bytes just written by two 8-byte stores, which the CPU cannot forward,
// and that stall was a tenth of a simulation's time.
func putAddr(dst *[16]byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		binary.LittleEndian.PutUint64(dst[:8], 0)
		// bytes 8–15: 0 0 0xff 0xff and the four address bytes
		binary.LittleEndian.PutUint64(dst[8:], 0xffff<<16|uint64(binary.LittleEndian.Uint32(b[:]))<<32)
		return
	}
	*dst = a.As16()
}

func bytesAddr(b *[16]byte, fam uint8) netip.Addr {
	a := netip.AddrFrom16(*b)
	if conntrack.Family(fam) == conntrack.IPv4 {
		return a.Unmap()
	}
	return a
}

// entry is one tracked connection: 64 bytes, one cache line (chunks are
// page-aligned, so entries never straddle lines). Its two hash nodes live
// beside it in the chunk's node array.
type entry struct {
	k       key     // original-direction tuple
	expires uint32  // expiry in clock units (2^20 ns), compared wrap-safe like jiffies
	wheelAt uint16  // wheel tick holding the entry (mod 2^16), when eQueued
	state   uint8   // TCP state
	flags   uint8   // eLive, eYoung, eQueued, and the status bits eSeenReply, eAssured
	tcp     tcpInfo // TCP tracking data; UDP keeps its stream time in end[0]
}

const entrySize = 64 // unsafe.Sizeof(entry{}), checked in a test

const (
	eLive      = 1 << iota
	eYoung     // created this tick: scheduled on the wheel when the tick ends
	eQueued    // on the wheel, in the slot of tick wheelAt
	eSeenReply // conntrack.StatusSeenReply
	eAssured   // conntrack.StatusAssured
)

// status returns the entry's conntrack status bits. Every entry in the
// table is confirmed; SEEN_REPLY and ASSURED are the two the trackers set.
func (e *entry) status() conntrack.Status {
	s := conntrack.StatusConfirmed
	if e.flags&eSeenReply != 0 {
		s |= conntrack.StatusSeenReply
	}
	if e.flags&eAssured != 0 {
		s |= conntrack.StatusAssured
	}
	return s
}

// Timestamps are kept in 32-bit clock units of 2^20 ns (about a
// millisecond, like jiffies at HZ=1000) and compared through their signed
// difference, which is exact while it stays under 2^31 units (26 days):
// the longest timeout a setting accepts is 24.8 days, and the wheel reaps
// entries within a tick of expiring.
const unitShift = 20

func toUnits(ns int64) uint32 { return uint32(ns >> unitShift) }

// expiryUnits returns the expiry, rounded up, of a timeout tmo set at now.
func expiryUnits(now, tmo int64) uint32 { return uint32((now + tmo + 1<<unitShift - 1) >> unitShift) }

// unitsLeft returns the time from now until the timestamp u, in ns;
// zero or less when u has passed.
func unitsLeft(u uint32, now int64) int64 {
	return int64(int32(u-toUnits(now)))<<unitShift - now&(1<<unitShift-1)
}

// tcpInfo is the per-connection TCP tracking data: enough sequence state
// for the retransmission, unacknowledged-data and zero-window timeout rules
// and the reopen and resync rules. 16 bytes.
type tcpInfo struct {
	end       [2]uint32 // highest sequence end sent, per direction (td_end)
	lastFP    uint32    // fingerprint of the last ACK-class packet: seq, ack, end, window
	tflags    uint8     // tcpEndSet*, tcpUnack*, tcpCloseInit*, tcpLastDirReply
	lastIndex uint8     // packet class of the last packet
	retrans   uint8     // consecutive retransmissions seen
	winOpen   bool      // the last ACK-class packet advertised a window; false until one has (the kernel's last_win starts at 0)
}

const (
	tcpEndSet0 = 1 << iota
	tcpEndSet1
	tcpUnack0
	tcpUnack1
	tcpCloseInit0
	tcpCloseInit1
	tcpLastDirReply
	tcpSimOpen // went through SYN_SENT2: a reply ACK in SYN_RECV establishes
)

// udpStreamPast is set in a UDP entry's tflags once its 2 s stream delay
// has passed: latched, because a 32-bit time compared 26 days later wraps.
const udpStreamPast = tcpEndSet0

// nodeRef names one of an entry's two hash nodes: (index<<1 | dir) + 1.
type nodeRef = uint32

func mkRef(idx uint32, dir Direction) nodeRef { return idx<<1 | uint32(dir) + 1 }
func refIdx(r nodeRef) uint32                 { return (r - 1) >> 1 }
func refDir(r nodeRef) Direction              { return Direction((r - 1) & 1) }

// bucket is the head of a hash chain: its first two nodes, the hash of
// the head's tuple, and a word holding the top 24 bits of the second's
// tuple hash (a tag: a match is confirmed on the key) over the chain's
// length (up to 254; 255 means count by walking). node is one link: the
// next node and the hash of the next node's tuple. A lookup reads the
// bucket, the nodes before the match from the third on, and the matching
// entry: an entry is read only when its hash matches, and the matching
// node itself not at all. An insert learns both chains' lengths from
// their buckets.
type bucket struct {
	head, second nodeRef
	hash         uint32
	tag2len      uint32
}

const lenBits = 0xff

func (b *bucket) len() uint32 { return b.tag2len & lenBits }

// setSecond records the second node and its tuple's hash.
func (b *bucket) setSecond(r nodeRef, h uint32) {
	b.second, b.tag2len = r, h&^lenBits|b.tag2len&lenBits
}

type node struct {
	next nodeRef
	hash uint32 // of the next node
}

// slab holds entries and their nodes in fixed-size chunks (no
// over-allocation beyond one chunk, no copying on growth); freed entries
// are chained through their original node's next.
const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits
)

type chunk struct {
	e [chunkLen]entry
	n [2 * chunkLen]node
}

type slab struct {
	chunks []*chunk
	free   uint32 // index+1 of the first free entry, 0 = none
	used   uint32 // entries handed out from the chunks (high-water mark)
}

func (s *slab) at(i uint32) *entry { return &s.chunks[i>>chunkBits].e[i&(chunkLen-1)] }

// node returns a node by reference.
func (s *slab) node(r nodeRef) *node {
	i := r - 1
	return &s.chunks[i>>(chunkBits+1)].n[i&(2*chunkLen-1)]
}

func (s *slab) alloc() uint32 {
	if s.free != 0 {
		i := s.free - 1
		n := s.node(mkRef(i, Original))
		s.free = n.next
		n.next = 0
		return i
	}
	i := s.used
	if int(i>>chunkBits) == len(s.chunks) {
		s.chunks = append(s.chunks, new(chunk))
	}
	s.used++
	return i
}

func (s *slab) release(i uint32) {
	*s.at(i) = entry{}
	*s.node(mkRef(i, Reply)) = node{}
	*s.node(mkRef(i, Original)) = node{next: s.free}
	s.free = i + 1
}

// hasher is the keyed tuple hash; buckets are chosen from it by
// multiply-shift. The kernel uses SipHash with a random per-boot key; what
// matters for behaviour is a keyed, well-mixed hash (kernel-conntrack.md
// §2), so this is a faster keyed multiply-fold over the key's five words
// (the 128-bit products of the words XORed with 256 key bits). The same
// seed gives the same layout.
type hasher struct{ k [4]uint64 }

func fold(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (h *hasher) hash(k *key) uint32 {
	w := k.addrWords()
	x := fold(w[0]^h.k[0], w[1]^h.k[1])
	y := fold(w[2]^h.k[2], w[3]^h.k[3])
	z := fold(k.tail()^h.k[1]^x, y^h.k[2])
	z = fold(z^h.k[0], x^y^h.k[3]^keySize)
	return uint32(z ^ z>>32)
}

func bucketOf(h uint32, n int) int { return int(uint64(h) * uint64(n) >> 32) }

// invert returns the reply-direction tuple of k.
func invert(k *key) key {
	r := *k
	r.src, r.dst = k.dst, k.src
	switch conntrack.Proto(k.proto) {
	case conntrack.ICMP, conntrack.ICMPv6:
		// the id stays in sport; the type becomes its reply type
		r.dport = uint16(conntrack.ICMPReplyType(conntrack.Proto(k.proto), uint8(k.dport>>8)))<<8 | k.dport&0xff
	default:
		r.sport, r.dport = k.dport, k.sport
	}
	return r
}
