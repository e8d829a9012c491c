package engine

import (
	"net/netip"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// TCPFlags are the TCP header flags.
type TCPFlags uint8

// TCP header flags.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// Direction is the direction of a packet relative to the entry it matched.
type Direction uint8

// Directions, numbered as in the kernel.
const (
	Original Direction = 0
	Reply    Direction = 1
)

func (d Direction) String() string {
	if d == Reply {
		return "reply"
	}
	return "original"
}

// Hook is where a packet enters the tracker: PREROUTING for packets
// received on an interface, OUTPUT for locally generated packets. NOTRACK
// rules are per hook, as in the raw table.
type Hook uint8

// Hooks.
const (
	Prerouting Hook = iota
	Output
)

// Embedded is the header of the packet an ICMP error refers to, as carried
// in the error's payload (the offending packet, in its own direction).
type Embedded struct {
	Proto            conntrack.Proto
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	ICMPType         uint8
	ICMPCode         uint8
	ICMPID           uint16
}

// Packet is what the tracker needs of one IP packet: the addresses, the
// layer-4 header fields and where it enters the stack. Payload bytes are
// not needed, only their length.
type Packet struct {
	Family           conntrack.Family // conntrack.IPv4 or conntrack.IPv6
	Proto            conntrack.Proto  // layer-4 protocol number
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP, UDP, UDP-Lite, SCTP, DCCP

	// TCP header fields.
	Flags    TCPFlags
	Seq, Ack uint32
	Window   uint16 // the raw window field (unscaled)

	// ICMP / ICMPv6 header fields (ID for echo and the other query types).
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	// Embedded is valid when HasEmbedded is set: the packet is an ICMP
	// error carrying the header of the packet it is about.
	Embedded    Embedded
	HasEmbedded bool

	// PayloadLen is the number of layer-4 payload bytes (TCP data length).
	PayloadLen int

	Hook  Hook
	Iface string // receiving interface at Prerouting, sending interface at Output
	Zone  uint16 // conntrack zone (CT zone)
	CPU   int    // which per-CPU statistics line counts this packet
}

// Verdict is the tracker's answer for one packet.
type Verdict struct {
	// CtInfo is what a state match sees: NEW, ESTABLISHED, RELATED (and
	// their reply variants), UNTRACKED, or INVALID (conntrack.CtInvalid: the
	// packet was left without a conntrack).
	CtInfo conntrack.CtInfo
	// Drop is set when conntrack itself dropped the packet: the table was
	// full and nothing could be evicted, or the insert failed (chain too long).
	Drop bool
	// Reason says why a packet was dropped or left INVALID ("" otherwise):
	// "table full", "chain too long", "invalid tcp flags", "invalid state
	// transition", "no entry for ICMP error", ….
	Reason string
	// Dir is the packet's direction relative to the entry (valid when an
	// entry was matched or created).
	Dir Direction
	// Created is set when this packet created the entry; Deleted when it
	// removed it (an RST before any reply, or a reopen that replaced it).
	Created, Deleted bool
	// State, Status and Timeout describe the entry after the packet (zero
	// when there is none). Timeout is the full timeout just set, in
	// seconds; Flow reports the seconds left.
	State   uint8
	Status  conntrack.Status
	Timeout uint32
}
