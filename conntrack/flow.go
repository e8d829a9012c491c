package conntrack

import "net/netip"

// Tuple is one direction of a connection. For TCP, UDP, UDP-Lite, SCTP and
// DCCP the ports are set; for ICMP and ICMPv6 the type, code and id; for GRE
// the keys are carried in the port fields.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	ICMPType         uint8
	ICMPCode         uint8
	ICMPID           uint16
}

// Counters are the accounting counters of one direction (nf_conntrack_acct=1).
type Counters struct {
	Packets, Bytes uint64
}

// Flow is one conntrack table entry.
//
// Flows handed to a [Source] callback are reused by the producer: copy a Flow
// (it holds no pointers into shared buffers except SecCtx) to keep it.
type Flow struct {
	Family  Family
	Proto   Proto
	Timeout uint32 // seconds left until the entry expires
	// State is the per-protocol state (a [TCPState] for TCP); zero for
	// protocols without states.
	State  uint8
	Orig   Tuple
	Reply  Tuple
	Status Status
	Mark   uint32
	Zone   uint16
	// ZoneOrig and ZoneReply are the direction-specific zones, printed as
	// zone-orig= / zone-reply= when set.
	ZoneOrig, ZoneReply uint16
	HasDirZones         bool
	Use                 uint32
	ID                  uint32
	// OrigCounters and ReplyCounters are valid when HasCounters is set.
	OrigCounters, ReplyCounters Counters
	HasCounters                 bool
	// DeltaTime is seconds since the entry was created (nf_conntrack_timestamp=1),
	// valid when HasDeltaTime is set.
	DeltaTime    uint64
	HasDeltaTime bool
	SecCtx       string
	Labels       [16]byte
}

// TCPState returns the flow's TCP state; it is meaningful only for TCP flows.
func (f *Flow) TCPState() TCPState { return TCPState(f.State) }

// StateName returns the protocol state's name ("ESTABLISHED", …), or "" for
// protocols without states.
func (f *Flow) StateName() string {
	names := stateNames(f.Proto)
	if names == nil {
		return ""
	}
	if int(f.State) < len(names) {
		return names[f.State]
	}
	return "UNKNOWN"
}

// Assured reports whether the entry is ASSURED (exempt from early drop).
func (f *Flow) Assured() bool { return f.Status&StatusAssured != 0 }

// Unreplied reports whether no reply has been seen ([UNREPLIED]).
func (f *Flow) Unreplied() bool { return f.Status&StatusSeenReply == 0 }

// NAT reports whether the entry is source- or destination-NATed: either
// status bit is set, or the reply tuple is not the inverse of the original.
func (f *Flow) NAT() bool {
	if f.Status&(StatusSrcNAT|StatusDstNAT) != 0 {
		return true
	}
	return f.Reply.Src != f.Orig.Dst || f.Reply.Dst != f.Orig.Src ||
		(f.Proto.HasPorts() && (f.Reply.SrcPort != f.Orig.DstPort || f.Reply.DstPort != f.Orig.SrcPort))
}

// Loopback reports whether the original tuple's source or destination is a
// loopback address (127.0.0.0/8, ::1).
func (f *Flow) Loopback() bool { return f.Orig.Src.IsLoopback() || f.Orig.Dst.IsLoopback() }

// Source produces flows one at a time and calls fn for each; an error from fn
// stops the iteration and is returned. The *Flow is only valid during the call.
type Source func(fn func(*Flow) error) error
