package engine

import "github.com/ctdoctor/ctdoctor/conntrack"

// ICMP query types that create entries, and their reply types; the kernel
// tracks only these pairs (§6).
var (
	icmp4Pair = [256]uint8{8: 0 + 1, 13: 14 + 1, 15: 16 + 1, 17: 18 + 1, 0: 8 + 1, 14: 13 + 1, 16: 15 + 1, 18: 17 + 1}
	icmp6Pair = [256]uint8{128: 129 + 1, 139: 140 + 1, 129: 128 + 1, 140: 139 + 1}
)

// icmpReplyType returns the paired type of an ICMP query or reply type, or
// the type itself for unpaired types.
func icmpReplyType(p conntrack.Proto, t uint8) uint8 {
	tab := &icmp4Pair
	if p == conntrack.ICMPv6 {
		tab = &icmp6Pair
	}
	if v := tab[t]; v != 0 {
		return v - 1
	}
	return t
}

// icmpIsRequest reports whether an ICMP type may create an entry.
func icmpIsRequest(p conntrack.Proto, t uint8) bool {
	if p == conntrack.ICMPv6 {
		return t == 128 || t == 139
	}
	return t == 8 || t == 13 || t == 15 || t == 17
}

// icmpIsError reports whether an ICMP type is an error that carries the
// header of the packet it is about.
func icmpIsError(p conntrack.Proto, t uint8) bool {
	if p == conntrack.ICMPv6 {
		return t >= 1 && t <= 4
	}
	switch t {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// icmpv6Untracked reports the ICMPv6 neighbour discovery, router and MLD
// messages the kernel marks UNTRACKED (a redirect, 137, is not one of them:
// it is INVALID).
func icmpv6Untracked(t uint8) bool {
	switch t {
	case 130, 131, 132, 133, 134, 135, 136, 143:
		return true
	}
	return false
}
