package conntrack

import "strconv"

// Family is the layer-3 protocol family as the kernel numbers it (AF_INET, AF_INET6).
type Family uint8

// Layer-3 families.
const (
	IPv4 Family = 2
	IPv6 Family = 10
)

// String returns the kernel's name for the family ("ipv4", "ipv6", or "unknown").
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return "unknown"
}

// Proto is a layer-4 protocol number (IPPROTO_*).
type Proto uint8

// Layer-4 protocols the kernel tracks by name.
const (
	ICMP    Proto = 1
	TCP     Proto = 6
	UDP     Proto = 17
	DCCP    Proto = 33
	GRE     Proto = 47
	ICMPv6  Proto = 58
	SCTP    Proto = 132
	UDPLite Proto = 136
)

var protoNames = [256]string{
	ICMP: "icmp", TCP: "tcp", UDP: "udp", DCCP: "dccp", GRE: "gre",
	ICMPv6: "icmpv6", SCTP: "sctp", UDPLite: "udplite",
}

// String returns the kernel's name for the protocol; protocols the kernel
// has no tracker for print as "unknown", as in /proc/net/nf_conntrack.
func (p Proto) String() string {
	if n := protoNames[p]; n != "" {
		return n
	}
	return "unknown"
}

// ProtoByName maps a protocol name ("tcp", "udp", "icmp", …) to its number.
func ProtoByName(name string) (Proto, bool) {
	for i, n := range protoNames {
		if n != "" && n == name {
			return Proto(i), true
		}
	}
	return 0, false
}

// HasPorts reports whether the protocol's tuple carries source and destination ports.
func (p Proto) HasPorts() bool {
	switch p {
	case TCP, UDP, UDPLite, SCTP, DCCP:
		return true
	}
	return false
}

// IsICMP reports whether the protocol is ICMP or ICMPv6 (type, code and id in the tuple).
func (p Proto) IsICMP() bool { return p == ICMP || p == ICMPv6 }

// TCPState is the conntrack TCP state, numbered as in the kernel.
type TCPState uint8

// TCP conntrack states.
const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	// TCPStateCount is the number of TCP states.
	TCPStateCount
)

var tcpStateNames = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// String returns the state's name as /proc/net/nf_conntrack prints it.
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) {
		return tcpStateNames[s]
	}
	return "TCP_STATE_" + strconv.Itoa(int(s))
}

// TCPStateByName maps "ESTABLISHED" etc. to the state.
func TCPStateByName(name string) (TCPState, bool) {
	for i, n := range tcpStateNames {
		if n == name {
			return TCPState(i), true
		}
	}
	return 0, false
}

var sctpStateNames = [...]string{"NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
	"SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT"}

var dccpStateNames = [...]string{"NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ",
	"CLOSING", "TIMEWAIT", "IGNORE", "INVALID"}

// stateNames returns the state name table for protocols that print a state.
func stateNames(p Proto) []string {
	switch p {
	case TCP:
		return tcpStateNames[:]
	case SCTP:
		return sctpStateNames[:]
	case DCCP:
		return dccpStateNames[:]
	}
	return nil
}

// Status is the conntrack status bit set (IPS_* in the kernel).
type Status uint32

// Status bits.
const (
	StatusExpected Status = 1 << iota
	StatusSeenReply
	StatusAssured
	StatusConfirmed
	StatusSrcNAT
	StatusDstNAT
	StatusSeqAdjust
	StatusSrcNATDone
	StatusDstNATDone
	StatusDying
	StatusFixedTimeout
	StatusTemplate
	StatusUntracked // bit 12, historically; reused by newer kernels
	StatusHelper
	StatusOffload
	StatusHWOffload
)

// Has reports whether every bit of b is set.
func (s Status) Has(b Status) bool { return s&b == b }

var statusNames = [...]string{"EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT",
	"DST_NAT", "SEQ_ADJUST", "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT",
	"TEMPLATE", "UNTRACKED", "HELPER", "OFFLOAD", "HW_OFFLOAD"}

// String lists the set bits, "|"-separated, or "UNSET" when none is set (the
// spelling conntrack-tools uses).
func (s Status) String() string {
	if s == 0 {
		return "UNSET"
	}
	var b []byte
	for i, n := range statusNames {
		if s&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, n...)
		}
	}
	if rest := s &^ (1<<len(statusNames) - 1); rest != 0 {
		if len(b) > 0 {
			b = append(b, '|')
		}
		b = append(b, "0x"+strconv.FormatUint(uint64(rest), 16)...)
	}
	return string(b)
}

// StatusByName maps one status bit name ("ASSURED", "SEEN_REPLY", …) to its bit.
// "UNSET" maps to 0.
func StatusByName(name string) (Status, bool) {
	if name == "UNSET" {
		return 0, true
	}
	for i, n := range statusNames {
		if n == name {
			return 1 << i, true
		}
	}
	return 0, false
}

// CtInfo is the per-packet conntrack information a state match sees.
type CtInfo uint8

// ctinfo values, numbered as in the kernel.
const (
	CtEstablished      CtInfo = 0
	CtRelated          CtInfo = 1
	CtNew              CtInfo = 2
	CtEstablishedReply CtInfo = 3
	CtRelatedReply     CtInfo = 4
	CtUntracked        CtInfo = 7
	// CtInvalid is not a kernel ctinfo value: it stands for "no conntrack"
	// (the packet is INVALID to a state match).
	CtInvalid CtInfo = 255
)

// String returns the state-match name ("NEW", "ESTABLISHED", …), with a
// ",REPLY" suffix for reply-direction values.
func (c CtInfo) String() string {
	switch c {
	case CtEstablished:
		return "ESTABLISHED"
	case CtRelated:
		return "RELATED"
	case CtNew:
		return "NEW"
	case CtEstablishedReply:
		return "ESTABLISHED,REPLY"
	case CtRelatedReply:
		return "RELATED,REPLY"
	case CtUntracked:
		return "UNTRACKED"
	case CtInvalid:
		return "INVALID"
	}
	return "CTINFO_" + strconv.Itoa(int(c))
}
