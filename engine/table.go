package engine

import (
	"net/netip"
	"unsafe"

	"github.com/dchest/siphash"

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

const keySize = int(unsafe.Sizeof(key{}))

func (k *key) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(k)), keySize) }

func addrBytes(a netip.Addr) [16]byte {
	if a.Is4() {
		var b [16]byte
		v4 := a.As4()
		copy(b[:4], v4[:])
		return b
	}
	return a.As16()
}

func bytesAddr(b *[16]byte, fam uint8) netip.Addr {
	if conntrack.Family(fam) == conntrack.IPv4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(*b)
}

// entry is one tracked connection: 80 bytes. Its two hash nodes live
// beside it in the chunk's node array.
type entry struct {
	k       key    // original-direction tuple
	expires int64  // clock reading (ns) at which the entry times out
	gen     uint32 // incremented whenever the slot is freed (stale wheel items)
	wheelAt uint32 // second+1 of the wheel slot holding the entry, 0 = none
	status  uint16 // conntrack.Status bits (the low 16 are all the kernel uses)
	state   uint8  // TCP state
	flags   uint8  // entry flags (eLive)
	tcp     tcpInfo
}

const eLive = 1

// tcpInfo is the per-connection TCP tracking data: enough sequence state
// for the retransmission, unacknowledged-data and zero-window timeout rules
// and the reopen and resync rules. UDP keeps its stream time in end.
type tcpInfo struct {
	end       [2]uint32 // highest sequence end sent, per direction (td_end)
	lastFP    uint32    // fingerprint of the last ACK-class packet: seq, ack, end, window
	lastWin   uint16    // window of the last ACK-class packet
	tflags    uint8     // tcpEndSet*, tcpUnack*, tcpCloseInit*, tcpLastDirReply
	lastIndex uint8     // packet class of the last packet
	retrans   uint8     // consecutive retransmissions seen
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

// nodeRef names one of an entry's two hash nodes: (index<<1 | dir) + 1.
type nodeRef = uint32

func mkRef(idx uint32, dir Direction) nodeRef { return idx<<1 | uint32(dir) + 1 }
func refIdx(r nodeRef) uint32                 { return (r - 1) >> 1 }
func refDir(r nodeRef) Direction              { return Direction((r - 1) & 1) }

// node is one hash-chain link: the next node in the chain and the hash of
// this node's tuple. Chains are walked on the compact node array, and an
// entry is read only when the hash matches — one cache miss per lookup in
// the common case, like a Go map.
type node struct {
	next nodeRef
	hash uint32
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
	e := s.at(i)
	gen := e.gen + 1
	*e = entry{gen: gen}
	*s.node(mkRef(i, Reply)) = node{}
	*s.node(mkRef(i, Original)) = node{next: s.free}
	s.free = i + 1
}

// hasher is the keyed tuple hash with multiply-shift bucket choice.
type hasher struct{ k0, k1 uint64 }

func (h hasher) hash(k *key) uint32 { return uint32(siphash.Hash(h.k0, h.k1, k.bytes())) }

func bucketOf(h uint32, n int) int { return int(uint64(h) * uint64(n) >> 32) }

// invert returns the reply-direction tuple of k.
func invert(k *key) key {
	r := *k
	r.src, r.dst = k.dst, k.src
	switch conntrack.Proto(k.proto) {
	case conntrack.ICMP, conntrack.ICMPv6:
		// the id stays in sport; the type becomes its reply type
		r.dport = uint16(icmpReplyType(conntrack.Proto(k.proto), uint8(k.dport>>8)))<<8 | k.dport&0xff
	default:
		r.sport, r.dport = k.dport, k.sport
	}
	return r
}
