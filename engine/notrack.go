package engine

import (
	"net/netip"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// PortRange is an inclusive range of ports; the zero value matches any port.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) match(p uint16) bool {
	if r.Lo == 0 && r.Hi == 0 {
		return true
	}
	hi := r.Hi
	if hi == 0 {
		hi = r.Lo
	}
	return p >= r.Lo && p <= hi
}

// NoTrackRule is one raw-table rule ending in NOTRACK (nft `notrack`,
// iptables `-t raw -j NOTRACK` / `-j CT --notrack`). Matching packets skip
// the tracker: no lookup, no entry, ctinfo UNTRACKED. Zero fields match
// anything. Loopback traffic needs a rule at both hooks, as on a real host.
type NoTrackRule struct {
	Hook  Hook            // Prerouting (matches the receiving interface) or Output (the sending one)
	Iface string          // "" = any interface
	Proto conntrack.Proto // 0 = any protocol
	Src   netip.Prefix    // zero = any source
	Dst   netip.Prefix    // zero = any destination
	SPort PortRange       // source ports (TCP, UDP, …)
	DPort PortRange       // destination ports
}

// Match reports whether the rule applies to the packet.
func (r *NoTrackRule) Match(p *Packet) bool {
	if r.Hook != p.Hook {
		return false
	}
	if r.Iface != "" && r.Iface != p.Iface {
		return false
	}
	if r.Proto != 0 && r.Proto != p.Proto {
		return false
	}
	if r.Src.IsValid() && !r.Src.Contains(p.Src) {
		return false
	}
	if r.Dst.IsValid() && !r.Dst.Contains(p.Dst) {
		return false
	}
	if (r.SPort != PortRange{} || r.DPort != PortRange{}) {
		if !p.Proto.HasPorts() {
			return false
		}
		if !r.SPort.match(p.SrcPort) || !r.DPort.match(p.DstPort) {
			return false
		}
	}
	return true
}
