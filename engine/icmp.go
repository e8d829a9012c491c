package engine

import "github.com/ctdoctor/ctdoctor/conntrack"

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
