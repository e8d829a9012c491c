// Package ruleset reads a network namespace's real firewall and plans
// NOTRACK changes that cannot take a service down.
//
// Stopping connection tracking for traffic that needs none (loopback, a
// busy local service) frees conntrack table entries, but untracked packets
// have the state UNTRACKED: they no longer match `ct state
// established,related` or `ct state new` (iptables' --state NEW,
// ESTABLISHED). Adding NOTRACK to a stateful firewall without first
// accepting untracked packets drops the traffic — the classic outage. This
// package does it in the right order, in the tables the operator really
// has.
//
// [Read] reads the live ruleset of a namespace (the caller's, a name in
// /run/netns, a path or a PID): nftables over netlink with
// github.com/google/nftables (tables, chains with hook, priority, policy
// and type, rules with handles, decoded into conditions and actions), and
// the iptables and ip6tables rules of both backends from
// iptables-legacy-save and iptables-nft-save, parsed by [ParseSave].
// Tables that iptables-nft manages show up in the nft listing too; they
// are marked [BackendIptablesNft] and only ever changed with iptables-nft.
//
// [PlanNotrack] turns a [Selector] (loopback, or one service: protocol and
// port) into a [Plan]: ordered steps with exact commands, what each does
// and why, and the commands that undo it. In every chain those packets
// cross where a rule that looks at conntrack may see them and they could
// then be dropped, it puts an accept of untracked packets right before
// that rule; it puts the NOTRACK rules in ctdoctor's own nft table (inet
// ctdoctor_notrack_lo, …) at priority -300 on prerouting and output.
//
// Loopback is untracked as a whole only when the firewall already accepts
// every new loopback connection (an `iif lo accept` before any drop, a
// policy accept with nothing dropping): then the accept of untracked
// loopback packets lets through nothing it did not. Otherwise the plan is
// narrowed to the ports every chain loopback packets cross accepts new
// loopback connections to (found from the ports the accept rules name):
// NOTRACK and the accept cover only the packets to those ports and the
// replies from them, and loopback connections to other ports stay tracked
// and dropped as before.
//
// A reply is recognised by its source port, which any local program may
// choose (any free port from ip_unprivileged_port_start up, 1024 by
// default). So the reply-side rules of TCP leave out the packets that
// open connections (a SYN without ACK: nft "tcp flags & (syn | ack) !=
// syn", iptables "! --syn"): a program connecting from an open port to
// one the firewall drops is tracked and dropped as before. Protocols with
// no such flag (UDP, UDP-Lite, SCTP, DCCP) have their replies untracked
// only from ports below ip_unprivileged_port_start, or where the
// firewall accepts new packets from the port anyway, or when
// [Selector.SourcePortReplies] asks for it; otherwise a loopback port
// stays tracked (a note says so) and a service is refused.
//
// Commands carry the namespace prefix (`ip netns exec NAME`), so
// pasted on the host they change the namespace and not the host; the nft
// part is one `nft -f -` batch, applied completely or not at all. A plan
// for a ruleset that already does it is empty. [WriteScript] renders a
// plan as a reviewable shell script.
//
// # Errors
//
// Read: without CAP_NET_ADMIN (or CAP_SYS_ADMIN to enter a namespace) the
// error wraps [ErrPermission]; a namespace that does not exist is an error
// listing the named ones. A missing backend, or a kernel without
// nf_tables, is not an error: it becomes one of [Ruleset.Warnings].
//
// PlanNotrack: a bad selector or target is a plain error. Traffic that
// must stay tracked gives a [*RefusedError], which matches [ErrRefused]
// and its reason: [ErrNATed] (a masquerade, snat, dnat or redirect rule may
// apply to it), [ErrHelper] (a rule attaches a conntrack helper to it),
// [ErrRestricted] (the firewall opens the port only to some sources),
// [ErrLoopbackClosed] (loopback, under a firewall that accepts neither all
// new loopback connections nor any to a port it names), [ErrSourcePort]
// (replies told apart only by a source port any program may send from),
// [ErrConflict] (an earlier ctdoctor plan's rules untrack replies by
// source port alone: undo them first). A ruleset the planner cannot
// write safe commands for wraps [ErrUnsupported]; a half-present
// ctdoctor table wraps [ErrConflict].
//
// ParseSave: malformed or truncated iptables-save text is an error naming
// the line.
//
// # What it assumes
//
// Rules are decoded into conditions on interface, protocol, ports, TCP
// flags, local destination and conntrack state. Any other match (addresses, marks,
// sets of unknown type, xt matches) counts as "may or may not match": it
// never makes the planner believe traffic is accepted or untracked when it
// may not be, and it makes NAT and helper rules count as applying. The nft
// listing is made of several netlink dumps, not one snapshot: a ruleset
// changed while it is read may be seen half old, half new; the handles in
// the nft batch then make it fail as a whole rather than apply to the
// wrong rule.
package ruleset
