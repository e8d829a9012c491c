package ruleset

import (
	"fmt"
	"strconv"
	"strings"
)

// Backend names the tool that manages a table, and so the commands a plan
// must use to change it.
type Backend string

const (
	// BackendNft is native nftables: tables written with nft or libnftables.
	BackendNft Backend = "nft"
	// BackendIptablesNft is iptables (and ip6tables) over nf_tables. Its
	// tables (ip filter, ip nat, …) also appear in `nft list ruleset`,
	// usually with xt compat expressions; they must be changed with
	// iptables-nft, never with nft.
	BackendIptablesNft Backend = "iptables-nft"
	// BackendIptablesLegacy is iptables (and ip6tables) over the legacy
	// x_tables interface, invisible to nft.
	BackendIptablesLegacy Backend = "iptables-legacy"
)

// Family is a table's address family as nft spells it: ip, ip6, inet,
// arp, bridge or netdev. iptables tables are ip, ip6tables tables ip6.
type Family string

// Hook is where a base chain is attached: prerouting, input, forward,
// output, postrouting (or ingress, egress). A regular chain has none.
type Hook string

// The netfilter hooks.
const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// Conntrack runs at priority -200 on prerouting and output; NOTRACK must run
// before it, at raw priority.
const (
	PriorityRaw       = -300
	PriorityConntrack = -200
)

// Ruleset is the firewall of one network namespace: native nftables tables
// and the iptables tables of both backends, as read by [Read] or parsed by
// [ParseSave].
type Ruleset struct {
	// NetNS is the namespace spec it was read from ("" the caller's own).
	NetNS  string   `json:"netns,omitempty"`
	Tables []*Table `json:"tables"`
	// Tools are the commands a plan may print.
	Tools Tools `json:"tools"`
	// Nftables says whether the kernel's nf_tables answered (false on a
	// kernel without it, or when the ruleset was built from text only).
	Nftables bool `json:"nftables"`
	// Warnings are the parts that could not be read, each saying why.
	Warnings []string `json:"warnings,omitempty"`
	// UnprivilegedPortStart is the namespace's
	// net.ipv4.ip_unprivileged_port_start, the first port a program may
	// send from without CAP_NET_BIND_SERVICE, as Read found it (container
	// runtimes often set it to 0); nil when unknown, taken as the
	// kernel's default, 1024.
	UnprivilegedPortStart *int `json:"unprivileged_port_start,omitempty"`
}

// DefaultUnprivilegedPortStart is the kernel's default
// net.ipv4.ip_unprivileged_port_start.
const DefaultUnprivilegedPortStart = 1024

// unprivilegedPortStart is the first port any local program may send
// from.
func (rs *Ruleset) unprivilegedPortStart() int {
	if rs.UnprivilegedPortStart != nil {
		return *rs.UnprivilegedPortStart
	}
	return DefaultUnprivilegedPortStart
}

// Tools are the firewall commands available where the plan will run, by
// the name to print; "" means not installed.
type Tools struct {
	Nft             string `json:"nft,omitempty"`
	IptablesLegacy  string `json:"iptables_legacy,omitempty"`
	Ip6tablesLegacy string `json:"ip6tables_legacy,omitempty"`
	IptablesNft     string `json:"iptables_nft,omitempty"`
	Ip6tablesNft    string `json:"ip6tables_nft,omitempty"`
}

// DefaultTools are the command names of a current distribution (nftables
// 1.x and iptables 1.8 with both backends installed).
func DefaultTools() Tools {
	return Tools{Nft: "nft", IptablesLegacy: "iptables-legacy", Ip6tablesLegacy: "ip6tables-legacy",
		IptablesNft: "iptables-nft", Ip6tablesNft: "ip6tables-nft"}
}

// iptables returns the command for a backend and family ("" if missing).
func (t Tools) iptables(b Backend, f Family) string {
	switch {
	case b == BackendIptablesLegacy && f == "ip":
		return t.IptablesLegacy
	case b == BackendIptablesLegacy && f == "ip6":
		return t.Ip6tablesLegacy
	case b == BackendIptablesNft && f == "ip":
		return t.IptablesNft
	case b == BackendIptablesNft && f == "ip6":
		return t.Ip6tablesNft
	}
	return ""
}

// Table is one nftables table or one iptables table (filter, nat, raw,
// mangle, security) of one family and backend.
type Table struct {
	Backend Backend  `json:"backend"`
	Family  Family   `json:"family"`
	Name    string   `json:"name"`
	Chains  []*Chain `json:"chains"`
	// Compat is set on an nft table that holds iptables-nft's xt compat
	// expressions (what `nft list ruleset` warns about).
	Compat bool `json:"compat,omitempty"`
}

// String is the table as nft names it ("inet fw"), or iptables' name with
// the command ("iptables-legacy -t filter").
func (t *Table) String() string {
	if t.Backend == BackendNft {
		return string(t.Family) + " " + t.Name
	}
	cmd := "iptables"
	if t.Family == "ip6" {
		cmd = "ip6tables"
	}
	return fmt.Sprintf("%s (%s) table %s", cmd, t.Backend, t.Name)
}

// Chain returns the table's chain by name, nil if there is none.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Chain is a base chain (attached to a hook) or a regular chain (reached by
// jump or goto).
type Chain struct {
	Name string `json:"name"`
	// Hook is "" for a regular chain.
	Hook Hook `json:"hook,omitempty"`
	// Type is filter, nat or route ("" for a regular chain).
	Type     string `json:"type,omitempty"`
	Priority int    `json:"priority"`
	// Policy is accept or drop for a base chain, "" for a regular chain.
	Policy string  `json:"policy,omitempty"`
	Rules  []*Rule `json:"rules"`
}

// Base says whether the chain is attached to a hook.
func (c *Chain) Base() bool { return c.Hook != "" }

// Rule is one rule, decoded into what matters for connection tracking:
// what it matches, whether it depends on conntrack, and what it does.
type Rule struct {
	// Handle is the nftables rule handle (0 for iptables-legacy).
	Handle uint64 `json:"handle,omitempty"`
	// Index is the 1-based position in the chain (`iptables -I CHAIN N`).
	Index int `json:"index"`
	// Text is the rule as iptables-save printed it (iptables only).
	Text    string `json:"text,omitempty"`
	Comment string `json:"comment,omitempty"`

	// Conds are the rule's matches, all of which must hold.
	Conds []Cond `json:"conds,omitempty"`
	// Stateful is set when the rule matches on conntrack (ct state, ct
	// status, ct mark…, -m state, -m conntrack, connlimit): untracked
	// packets are judged differently by it.
	Stateful bool `json:"stateful,omitempty"`

	// Verdict is accept, drop, reject, jump, goto, return, queue, vmap or
	// "" (the rule only has statements, or continues).
	Verdict string `json:"verdict,omitempty"`
	// Target is the chain of a jump or goto.
	Target string `json:"target,omitempty"`
	// VMap is the verdict map of a vmap rule: the verdict for each key.
	VMap *VMap `json:"vmap,omitempty"`

	// NAT is masquerade, snat, dnat, redirect or netmap.
	NAT string `json:"nat,omitempty"`
	// Helper is the conntrack helper the rule assigns (ct helper set,
	// -j CT --helper).
	Helper  string `json:"helper,omitempty"`
	Notrack bool   `json:"notrack,omitempty"`
	// Compat is set on nft rules made of iptables-nft's xt expressions.
	Compat bool `json:"compat,omitempty"`
}

// VMap is a verdict map: the value of Field selects the verdict.
type VMap struct {
	Field   Field       `json:"field"`
	Entries []VMapEntry `json:"entries"`
	// Unknown is set when the verdicts could not be read (google/nftables
	// v0.3.0 does not decode the verdicts of map elements): any verdict,
	// any jump, is possible.
	Unknown bool `json:"unknown,omitempty"`
}

// VMapEntry is one key range of a verdict map.
type VMapEntry struct {
	Key     Range  `json:"key"`
	Verdict string `json:"verdict"`
	Target  string `json:"target,omitempty"`
}

// Field is a packet or connection property a Cond tests.
type Field string

// The fields the planner understands. Anything else is FieldOther, which
// it treats as "may or may not match".
const (
	FieldIIFName   Field = "iifname" // input interface name
	FieldOIFName   Field = "oifname" // output interface name
	FieldIIF       Field = "iif"     // input interface index (lo is 1)
	FieldOIF       Field = "oif"     // output interface index
	FieldL4Proto   Field = "l4proto" // IP protocol number (tcp 6, udp 17)
	FieldNFProto   Field = "nfproto" // 2 IPv4, 10 IPv6
	FieldDPort     Field = "dport"   // transport destination port
	FieldSPort     Field = "sport"   // transport source port
	FieldDaddrType Field = "daddr_type"
	FieldTCPFlags  Field = "tcp_flags" // the TCP header's flags byte (see TCPFin…)
	FieldCtState   Field = "ct_state"  // conntrack state bits (see CtNew…)
	FieldCt        Field = "ct"        // any other conntrack key
	FieldOther     Field = "other"
)

// Conntrack state bits, as nft's ct state and the kernel use them.
const (
	CtInvalid     = 1
	CtEstablished = 2
	CtRelated     = 4
	CtNew         = 8
	CtUntracked   = 64
)

// TCP flags, as the flags byte of the TCP header holds them.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// rtnLocal is RTN_LOCAL, `fib daddr type local`.
const rtnLocal = 2

// Range is an inclusive range of numeric values.
type Range struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Cond is one match of a rule. Exactly one of Values, Mask, Names or Text
// says what is tested (tcp_flags: Values, with an optional Mask); Neg
// inverts the result.
type Cond struct {
	Field Field `json:"field"`
	Neg   bool  `json:"neg,omitempty"`
	// Values: the field's value is in one of these ranges.
	Values []Range `json:"values,omitempty"`
	// Mask (ct_state): state & Mask is not zero. Mask (tcp_flags): the
	// value tested against Values is flags & Mask (0: all the flags), as
	// in nft's "tcp flags & (syn | ack) == syn" and iptables' --tcp-flags
	// SYN,ACK SYN.
	Mask uint32 `json:"mask,omitempty"`
	// Names (interface names): equal to one of them; a trailing "*" is a
	// prefix match, as in iptables' "eth+" and nft's "eth*".
	Names []string `json:"names,omitempty"`
	// Text describes a match the planner does not interpret (FieldOther,
	// FieldCt, or a ct state match it could not decode).
	Text string `json:"text,omitempty"`
}

// String renders the condition in nft-like syntax, for messages.
func (c Cond) String() string {
	neg := ""
	if c.Neg {
		neg = "!= "
	}
	switch {
	case c.Text != "":
		if c.Neg {
			return "not " + c.Text
		}
		return c.Text
	case len(c.Names) > 0:
		return string(c.Field) + " " + neg + setString(quoteAll(c.Names))
	case c.Field == FieldCtState && c.Mask != 0:
		if c.Neg {
			return "ct state & (" + ctStateNames(c.Mask) + ") == 0"
		}
		return "ct state " + ctStateNames(c.Mask)
	case c.Field == FieldTCPFlags && len(c.Values) > 0:
		return tcpFlagsString(c)
	case c.Field == FieldCtState:
		var names []string
		for _, r := range c.Values {
			names = append(names, ctStateNames(uint32(r.From)))
		}
		return "ct state " + neg + setString(names)
	}
	var vals []string
	for _, r := range c.Values {
		v := valueName(c.Field, r.From)
		if r.To != r.From {
			v += "-" + valueName(c.Field, r.To)
		}
		vals = append(vals, v)
	}
	return string(c.Field) + " " + neg + setString(vals)
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strconv.Quote(v)
	}
	return out
}

func setString(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

var protoNames = map[uint64]string{1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}

// protoNumbers maps the protocols a Selector may name to their numbers.
var protoNumbers = map[string]uint8{"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132, "udplite": 136}

func valueName(f Field, v uint64) string {
	switch f {
	case FieldL4Proto:
		if n, ok := protoNames[v]; ok {
			return n
		}
	case FieldNFProto:
		switch v {
		case 2:
			return "ipv4"
		case 10:
			return "ipv6"
		}
	case FieldIIF, FieldOIF:
		if v == 1 {
			return `"lo"`
		}
	case FieldDaddrType:
		if v == rtnLocal {
			return "local"
		}
	case FieldTCPFlags:
		if v <= 0xff {
			return tcpFlagNames(uint8(v), "|")
		}
	}
	return strconv.FormatUint(v, 10)
}

var tcpFlagList = []struct {
	bit  uint8
	name string
}{{TCPFin, "fin"}, {TCPSyn, "syn"}, {TCPRst, "rst"}, {TCPPsh, "psh"}, {TCPAck, "ack"}, {TCPUrg, "urg"}, {TCPEce, "ecn"}, {TCPCwr, "cwr"}}

// tcpFlagNames names the flags as nft does ("syn|ack"), "0x0" for none.
func tcpFlagNames(b uint8, sep string) string {
	var names []string
	for _, f := range tcpFlagList {
		if b&f.bit != 0 {
			names = append(names, f.name)
		}
	}
	if len(names) == 0 {
		return "0x0"
	}
	return strings.Join(names, sep)
}

// tcpFlagsString renders a tcp_flags condition in nft's syntax:
// "tcp flags & (syn | ack) != syn".
func tcpFlagsString(c Cond) string {
	s := "tcp flags"
	if c.Mask != 0 && c.Mask != 0xff {
		m := tcpFlagNames(uint8(c.Mask), " | ")
		if strings.Contains(m, "|") {
			m = "(" + m + ")"
		}
		s += " & " + m
	}
	op := "== "
	if c.Neg {
		op = "!= "
	}
	var vals []string
	for _, r := range c.Values {
		v := valueName(FieldTCPFlags, r.From)
		if r.To != r.From {
			v += "-" + valueName(FieldTCPFlags, r.To)
		}
		vals = append(vals, v)
	}
	return s + " " + op + setString(vals)
}

func ctStateNames(mask uint32) string {
	var names []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}, {CtUntracked, "untracked"}} {
		if mask&s.bit != 0 {
			names = append(names, s.name)
			mask &^= s.bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("0x%x", mask))
	}
	return strings.Join(names, ",")
}

// String is a one-line summary of the rule: its conditions and what it does.
func (r *Rule) String() string {
	if r.Text != "" {
		return r.Text
	}
	var parts []string
	for _, c := range r.Conds {
		parts = append(parts, c.String())
	}
	if r.Notrack {
		parts = append(parts, "notrack")
	}
	if r.Helper != "" {
		parts = append(parts, "ct helper set "+strconv.Quote(r.Helper))
	}
	if r.NAT != "" {
		parts = append(parts, r.NAT)
	}
	switch r.Verdict {
	case "jump", "goto":
		parts = append(parts, r.Verdict+" "+r.Target)
	case "vmap":
		parts = append(parts, string(r.VMap.Field)+" vmap { … }")
	case "":
	default:
		parts = append(parts, r.Verdict)
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// where names a rule for messages: table, chain and handle or position.
func where(t *Table, c *Chain, r *Rule) string {
	pos := fmt.Sprintf("rule %d", r.Index)
	if r.Handle != 0 {
		pos = fmt.Sprintf("handle %d", r.Handle)
	}
	return fmt.Sprintf("%s chain %s %s (%s)", t, c.Name, pos, r)
}
