// Package engine is a userspace connection tracker that behaves like Linux
// nf_conntrack: the same tuples (IPv4/IPv6 × TCP/UDP/ICMP/ICMPv6/other, with
// zones), the same TCP, UDP, ICMP and generic state machines and timeouts,
// the same per-packet verdicts (ctinfo, as `ct state` sees them), and the same
// table: a maximum and a bucket count, a keyed hash with multiply-shift bucket
// choice, entries hashed in both directions, early drop when full, the chain
// length limit, garbage collection and the kernel's statistics counters.
//
// It is built from the documented behaviour of the kernel (see
// docs/kernel-conntrack.md in the ctdoctor repository) and is checked
// against the kernel itself: the differential tests inject the same packets
// into a network namespace and into a [Tracker] and compare state, flags,
// timeouts and ctinfo after every packet.
//
// A [Tracker] is safe for concurrent use. Its clock is injectable: a
// [VirtualClock] drives simulations (ctdoctor simulate), [RealClock] serves a
// userspace network stack. Its entries render as [conntrack.Flow], so every
// ctdoctor analysis works on a simulated table as on a real host.
//
// Not modelled: NAT, helpers and expectations, SCTP/DCCP state machines
// (they are tracked as generic), strict TCP window checks (sequence numbers
// are followed only as far as the timeout rules need).
package engine
