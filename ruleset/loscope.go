package ruleset

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// protoPort is a transport protocol and port.
type protoPort struct {
	proto string
	port  uint16
}

func (p protoPort) String() string { return fmt.Sprintf("%s/%d", p.proto, p.port) }

// maxLoopbackPorts bounds how many ports a loopback plan untracks one by
// one; a wider range of accepted ports stays tracked.
const maxLoopbackPorts = 64

// loopbackScope decides what a loopback plan may untrack without opening
// anything the firewall keeps closed. NOTRACK of all lo traffic, with the
// accept of untracked lo packets the chains then need, lets every
// loopback packet through; that is only the same firewall if its chains
// already accept every new loopback connection (an "iif lo accept" before
// any drop, a policy accept with nothing dropping). Otherwise the plan is
// narrowed to the ports the chains accept new loopback connections to.
//
// It returns nil ports for all of lo, or the ports (sorted), with notes
// on what was left out; a firewall that opens no loopback port at all is
// refused.
func loopbackScope(rs *Ruleset, sel Selector) (ports []protoPort, notes []string, err error) {
	if !sel.Loopback {
		return nil, nil, nil
	}
	blocker := acceptsAllLoopback(rs, sel)
	if blocker == "" {
		return nil, nil, nil
	}
	cands, notes := candidatePorts(rs, sel)
	var bySource []protoPort // open, but their replies must stay tracked
	for _, pp := range cands {
		if !portOpenOnLoopback(rs, sel, pp) {
			continue
		}
		if !sourcePortSafe(rs, sel, pp) {
			bySource = append(bySource, pp)
			continue
		}
		ports = append(ports, pp)
	}
	if len(bySource) > 0 {
		notes = append(notes, sourcePortNote(rs, bySource))
	}
	if len(ports) == 0 && len(bySource) > 0 {
		return nil, nil, &RefusedError{Selector: sel, Reason: ErrSourcePort, Rule: blocker,
			Detail: "the only ports the firewall accepts new loopback connections to are " + portList(bySource) + ": " + sourcePortWhy(rs, bySource)}
	}
	if len(ports) == 0 {
		detail := "the firewall does not accept every new loopback connection, and no port is accepted as new on lo by every chain " +
			"loopback packets cross (as far as the rules can be read); untracking loopback would need an accept of untracked " +
			"loopback packets, which would let through connections the firewall drops today, so loopback stays tracked"
		return nil, nil, &RefusedError{Selector: sel, Reason: ErrLoopbackClosed, Rule: blocker, Detail: detail}
	}
	return ports, notes, nil
}

// sourcePortSafe says whether untracking the replies from pp lets through
// nothing the firewall drops today. TCP replies are told apart from a new
// connection by their flags (a SYN without ACK stays tracked); other
// protocols' replies only by their source port, which is safe when only
// privileged programs may send from it (below the namespace's
// ip_unprivileged_port_start), when the selector accepts the risk, or
// when every chain those packets cross accepts them even as new
// connections, to any port.
func sourcePortSafe(rs *Ruleset, sel Selector, pp protoPort) bool {
	if pp.proto == "tcp" || int(pp.port) < rs.unprivilegedPortStart() || sel.SourcePortReplies {
		return true
	}
	var ports []protoPort
	if sel.Loopback {
		ports = []protoPort{pp}
	}
	for _, f := range sel.flows(ports) {
		if f.spec.sport == 0 {
			continue
		}
		for _, t := range rs.Tables {
			if isOurs(t, sel) {
				continue
			}
			for _, c := range t.Chains {
				if !c.Base() || c.Type == "nat" || !slices.Contains(f.hooks, c.Hook) {
					continue
				}
				for _, fam := range nfprotos(t.Family) {
					k := f.spec.class(c.Hook, f.desc)
					k.nfproto, k.ctState = fam, CtNew
					if fate(t, c, k, 0) != yes {
						return false
					}
				}
			}
		}
	}
	return true
}

// sourcePortWhy says why replies from these ports stay tracked.
func sourcePortWhy(rs *Ruleset, ports []protoPort) string {
	return fmt.Sprintf("%s has no flag that marks a new connection, so its replies can be told apart only by their source port, "+
		"and any local program may send from a port from %d up (net.ipv4.ip_unprivileged_port_start) when it is free: "+
		"untracked and accepted, its packets would reach what the firewall drops today, so this traffic stays tracked",
		protoTitles(ports), rs.unprivilegedPortStart())
}

// sourcePortNote is the plan's note for ports left tracked by
// sourcePortSafe.
func sourcePortNote(rs *Ruleset, ports []protoPort) string {
	return portList(ports) + " stay tracked on loopback although the firewall accepts new loopback connections to them: " + sourcePortWhy(rs, ports)
}

// protoTitles is "UDP" or "UDP and SCTP".
func protoTitles(ports []protoPort) string {
	var names []string
	for _, p := range ports {
		n := map[string]string{"udplite": "UDP-Lite"}[p.proto]
		if n == "" {
			n = strings.ToUpper(p.proto)
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, " and ")
}

// loChains calls fn for every chain and address family loopback packets
// cross where a verdict is given to them (not nat chains, which untracked
// packets skip, nor forward), with the hook's side: in (prerouting,
// input) or out (output, postrouting).
func loChains(rs *Ruleset, sel Selector, fn func(t *Table, c *Chain, fam uint8, in bool) bool) {
	for _, t := range rs.Tables {
		fams := nfprotos(t.Family)
		if fams == nil || isOurs(t, sel) {
			continue
		}
		for _, c := range t.Chains {
			if !c.Base() || c.Type == "nat" {
				continue
			}
			in := slices.Contains(inHooks, c.Hook)
			if !in && !slices.Contains(outHooks, c.Hook) {
				continue
			}
			for _, fam := range fams {
				if !fn(t, c, fam, in) {
					return
				}
			}
		}
	}
}

// loClass is a new loopback packet (to proto/port when pp is set) at the
// chain's hook.
func loClass(c *Chain, fam uint8, in bool, pp *protoPort, state uint32) class {
	s := spec{oifLo: !in, iifLo: in}
	if pp != nil {
		s.proto, s.dport = pp.proto, pp.port
	}
	k := s.class(c.Hook, "loopback packets")
	k.nfproto, k.ctState = fam, state
	return k
}

// acceptsAllLoopback returns "" when every chain loopback packets cross
// accepts all of them, and otherwise names the first chain that may not.
// A family whose loopback traffic is already untracked (the operator's own
// NOTRACK) is judged as untracked packets, as the chains see it today;
// otherwise as new connections.
func acceptsAllLoopback(rs *Ruleset, sel Selector) string {
	untracked := map[uint8]bool{}
	for _, fam := range []uint8{2, 10} {
		all := true
		for _, n := range []notrackRule{{HookPrerouting, spec{iifLo: true}}, {HookOutput, spec{oifLo: true}}} {
			k := n.spec.class(n.hook, "")
			k.nfproto, k.ctState = fam, 0
			all = all && notracked(rs, k)
		}
		untracked[fam] = all
	}
	blocker := ""
	loChains(rs, sel, func(t *Table, c *Chain, fam uint8, in bool) bool {
		state := uint32(CtNew)
		if untracked[fam] {
			state = CtUntracked
		}
		if fate(t, c, loClass(c, fam, in, nil, state), 0) != yes {
			blocker = fmt.Sprintf("%s chain %s, policy %s", t, c.Name, c.Policy)
			return false
		}
		return true
	})
	return blocker
}

// portOpenOnLoopback says whether every chain loopback packets cross
// accepts a new loopback connection to the port, for IPv4 and IPv6.
func portOpenOnLoopback(rs *Ruleset, sel Selector, pp protoPort) bool {
	open := true
	loChains(rs, sel, func(t *Table, c *Chain, fam uint8, in bool) bool {
		open = fate(t, c, loClass(c, fam, in, &pp, CtNew), 0) == yes
		return open
	})
	return open
}

// candidatePorts are the protocol/port pairs named by accept rules that
// may match a new loopback connection: the only ports a chain can accept
// as new on lo while dropping other loopback traffic. Whether each is
// accepted by every chain is for portOpenOnLoopback to tell.
func candidatePorts(rs *Ruleset, sel Selector) ([]protoPort, []string) {
	var (
		out   []protoPort
		notes []string
	)
	seen := map[protoPort]bool{}
	k := spec{iifLo: true}.class(HookInput, "loopback packets")
	k.ctState = CtNew
	for _, t := range rs.Tables {
		if nfprotos(t.Family) == nil || isOurs(t, sel) {
			continue
		}
		for _, c := range t.Chains {
			if c.Type == "nat" {
				continue
			}
			for _, r := range c.Rules {
				if r.Verdict != "accept" || r.matches(k, false) == no {
					continue
				}
				protos, ports := ruleProtoPorts(r)
				for _, proto := range protos {
					for _, rg := range ports {
						if rg.From == 0 || rg.To > 65535 || rg.From > rg.To {
							continue
						}
						if rg.To-rg.From+1 > maxLoopbackPorts || len(seen)+int(rg.To-rg.From+1) > maxLoopbackPorts {
							notes = append(notes, fmt.Sprintf("%s ports %d-%d, accepted by %s, stay tracked on loopback: too many to untrack one by one (at most %d)",
								proto, rg.From, rg.To, where(t, c, r), maxLoopbackPorts))
							continue
						}
						for p := rg.From; p <= rg.To; p++ {
							pp := protoPort{proto, uint16(p)}
							if !seen[pp] {
								seen[pp] = true
								out = append(out, pp)
							}
						}
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b protoPort) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port))
	})
	return out, notes
}

// ruleProtoPorts returns the protocols (that a selector may name) and the
// destination port ranges of a rule's positive conditions. A port match
// without a protocol condition counts for tcp and udp.
func ruleProtoPorts(r *Rule) ([]string, []Range) {
	var (
		protos   []string
		ports    []Range
		hasProto bool
	)
	for _, c := range r.Conds {
		if c.Neg {
			continue
		}
		switch c.Field {
		case FieldL4Proto:
			hasProto = true
			for _, rg := range c.Values {
				for name, n := range protoNumbers {
					if uint64(n) >= rg.From && uint64(n) <= rg.To && !slices.Contains(protos, name) {
						protos = append(protos, name)
					}
				}
			}
		case FieldDPort:
			ports = append(ports, c.Values...)
		}
	}
	if !hasProto {
		protos = []string{"tcp", "udp"}
	}
	slices.Sort(protos)
	return protos, ports
}

// portList is "tcp/80, tcp/8081".
func portList(ports []protoPort) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
