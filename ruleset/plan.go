package ruleset

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Selector chooses the traffic to stop tracking: all loopback traffic, or
// one service of this host (a transport protocol and port).
type Selector struct {
	Loopback bool `json:"loopback,omitempty"`
	// Proto is tcp, udp, sctp, dccp or udplite; Port its port.
	Proto string `json:"proto,omitempty"`
	Port  uint16 `json:"port,omitempty"`
	// SourcePortReplies accepts untracking the replies of a protocol
	// other than TCP by their source port alone, even from a port any
	// local program may send from (see [ErrSourcePort]): such a program's
	// packets from that port are then untracked and accepted too. Off by
	// default, those replies stay tracked (loopback) or the plan is
	// refused (a service).
	SourcePortReplies bool `json:"source_port_replies,omitempty"`
}

// Loopback selects every packet on the loopback interface (lo).
func Loopback() Selector { return Selector{Loopback: true} }

// Service selects the traffic of a service listening on this host: the
// packets to proto/port at a local address and the packets the service
// sends back from that port. Forwarded traffic stays tracked.
func Service(proto string, port uint16) Selector { return Selector{Proto: proto, Port: port} }

// Validate checks the selector.
func (s Selector) Validate() error {
	switch {
	case s.Loopback && (s.Proto != "" || s.Port != 0):
		return errors.New("selector: loopback or a service, not both")
	case s.Loopback:
		return nil
	case s.Proto == "" && s.Port == 0:
		return errors.New("selector: empty (want loopback, or a protocol and port)")
	}
	if _, ok := protoNumbers[s.Proto]; !ok {
		return fmt.Errorf("selector: protocol %q: want tcp, udp, sctp, dccp or udplite", s.Proto)
	}
	if s.Port == 0 {
		return fmt.Errorf("selector: %s port 0", s.Proto)
	}
	return nil
}

// String is "loopback" or "tcp/8080".
func (s Selector) String() string {
	if s.Loopback {
		return "loopback"
	}
	return fmt.Sprintf("%s/%d", s.Proto, s.Port)
}

// TableName is the nftables table (family inet) that holds ctdoctor's
// NOTRACK rules for this traffic: one table per selector, so that undoing
// one is deleting its table.
func (s Selector) TableName() string {
	if s.Loopback {
		return "ctdoctor_notrack_lo"
	}
	return fmt.Sprintf("ctdoctor_notrack_%s_%d", s.Proto, s.Port)
}

// Comment marks every rule a plan adds, so they can be found again.
func (s Selector) Comment() string {
	if s.Loopback {
		return "ctdoctor notrack lo"
	}
	return fmt.Sprintf("ctdoctor notrack %s port %d", s.Proto, s.Port)
}

// StepKind says which tool a step's commands use.
type StepKind string

// The step kinds.
const (
	StepNft      StepKind = "nft"
	StepIptables StepKind = "iptables"
)

// Plan is the ordered list of changes that stop tracking the selected
// traffic without changing what the firewall lets through. No steps means
// there is nothing to do: the ruleset already does it.
type Plan struct {
	Selector Selector `json:"selector"`
	Target   Target   `json:"target"`
	Steps    []Step   `json:"steps"`
	// Notes explain chains left unchanged and other decisions.
	Notes []string `json:"notes,omitempty"`
}

// Empty says whether there is nothing to do.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 }

// Commands returns every step's commands, in the order to run them.
func (p *Plan) Commands() []string {
	var out []string
	for _, s := range p.Steps {
		out = append(out, s.Commands...)
	}
	return out
}

// UndoCommands returns the commands that undo the plan, in the order to
// run them: the steps in reverse, so tracking resumes before the accept
// rules go.
func (p *Plan) UndoCommands() []string {
	var out []string
	for _, s := range slices.Backward(p.Steps) {
		out = append(out, s.Undo...)
	}
	return out
}

// Step is one change made with one tool. Commands are exact shell command
// lines (an nft batch is one command with a here-document), prefixed to run
// in the target namespace; Undo reverses them.
type Step struct {
	Kind    StepKind `json:"kind"`
	Backend Backend  `json:"backend"`
	// What the step does and Why, in plain words.
	What     string   `json:"what"`
	Why      string   `json:"why"`
	Commands []string `json:"commands"`
	Undo     []string `json:"undo"`
	// Changes are the same changes as data, for an applier that makes
	// them itself (over netlink) and records the handles.
	Changes []Change `json:"changes"`
}

// Change is one rule or table a step adds.
type Change struct {
	// Action is insert-rule (an accept rule in the operator's chain),
	// add-table (ctdoctor's NOTRACK table, with its chains and rules) or
	// add-rule (an iptables NOTRACK rule in the raw table).
	Action string `json:"action"`
	Family Family `json:"family"`
	Table  string `json:"table"`
	Chain  string `json:"chain,omitempty"`
	// BeforeHandle (nft) or Index (iptables, 1-based) is where an
	// inserted rule goes: before that rule.
	BeforeHandle uint64 `json:"before_handle,omitempty"`
	Index        int    `json:"index,omitempty"`
	// Rule is the rule in the tool's syntax (nft rule text, or iptables
	// arguments after the chain); for add-table the whole table.
	Rule    string `json:"rule"`
	Comment string `json:"comment"`
}

// spec is a set of packets as a rule matches them, rendered for nft or
// iptables.
type spec struct {
	iifLo, oifLo bool
	proto        string
	dport, sport uint16
	local        bool // destination is a local address
	// notSyn (tcp) leaves out the packets that open connections (SYN
	// without ACK): a reply-side rule, told apart by its source port,
	// must not take a connection a local program opens from that port.
	notSyn bool
}

// replySpec is the reply side of proto/port: the packets from the port,
// without the connection-opening SYNs where the protocol has them (TCP).
func replySpec(s spec, proto string, port uint16) spec {
	s.proto, s.sport, s.notSyn = proto, port, proto == "tcp"
	return s
}

// nftNotSyn and iptNotSyn match every TCP packet but a connection-opening
// SYN (SYN set, ACK clear). nft lists it back as "tcp flags != syn /
// syn,ack"; iptables-save prints "! --tcp-flags FIN,SYN,RST,ACK SYN".
const (
	nftNotSyn = "tcp flags & (syn | ack) != syn"
	iptNotSyn = "! --syn"
)

func (s spec) nft() string {
	var p []string
	if s.iifLo {
		p = append(p, `iif "lo"`)
	}
	if s.oifLo {
		p = append(p, `oif "lo"`)
	}
	if s.local {
		p = append(p, "fib daddr type local")
	}
	if s.dport != 0 {
		p = append(p, fmt.Sprintf("%s dport %d", s.proto, s.dport))
	}
	if s.sport != 0 {
		p = append(p, fmt.Sprintf("%s sport %d", s.proto, s.sport))
	}
	if s.notSyn {
		p = append(p, nftNotSyn)
	}
	return strings.Join(p, " ")
}

func (s spec) ipt() string {
	var p []string
	if s.iifLo {
		p = append(p, "-i lo")
	}
	if s.oifLo {
		p = append(p, "-o lo")
	}
	if s.proto != "" {
		p = append(p, "-p "+s.proto)
		mod := "-m " + s.proto
		if s.proto == "udplite" {
			mod = "-m multiport"
		}
		switch {
		case s.dport != 0 && s.proto == "udplite":
			p = append(p, fmt.Sprintf("%s --dports %d", mod, s.dport))
		case s.sport != 0 && s.proto == "udplite":
			p = append(p, fmt.Sprintf("%s --sports %d", mod, s.sport))
		case s.dport != 0:
			p = append(p, fmt.Sprintf("%s --dport %d", mod, s.dport))
		case s.sport != 0:
			p = append(p, fmt.Sprintf("%s --sport %d", mod, s.sport))
		}
		if s.notSyn {
			p = append(p, iptNotSyn)
		}
	}
	if s.local {
		p = append(p, "-m addrtype --dst-type LOCAL")
	}
	return strings.Join(p, " ")
}

// class is the packets a spec describes, at a hook, as they are after the
// NOTRACK (untracked).
func (s spec) class(h Hook, desc string) class {
	k := class{hook: h, dport: -1, sport: -1, local: s.local, ctState: CtUntracked, desc: desc}
	if s.iifLo {
		k.iif, k.local = "lo", true
	}
	if s.oifLo {
		k.oif, k.local = "lo", true
	}
	if s.proto != "" {
		k.l4proto = protoNumbers[s.proto]
	}
	if s.dport != 0 {
		k.dport = int(s.dport)
	}
	if s.sport != 0 {
		k.sport = int(s.sport)
	}
	if s.notSyn {
		k.flags = notOpening
	}
	return k
}

// flow is one part of the selected traffic at one hook: the packets, and
// whether they open connections (for NAT and helper checks) and are the
// requests of the service (for the restriction check).
type flow struct {
	hooks   []Hook
	spec    spec
	desc    string
	opens   bool // new connections start with these packets
	request bool // requests from anyone to the service
}

var (
	inHooks  = []Hook{HookPrerouting, HookInput}
	outHooks = []Hook{HookOutput, HookPostrouting}
)

// flows are the parts of the selected traffic, by the hooks they cross.
// Loopback packets leave through output and postrouting and come back in
// through prerouting and input; their NAT and helpers are decided when they
// leave. Loopback narrowed to ports (see loopbackScope) is, for each port,
// the packets to it and the replies from it, both ways. A service's
// requests come in (from anywhere, loopback too) and its replies leave;
// local clients' requests leave through lo.
func (s Selector) flows(ports []protoPort) []flow {
	if s.Loopback && ports == nil {
		return []flow{
			{hooks: inHooks, spec: spec{iifLo: true}, desc: "loopback packets"},
			{hooks: outHooks, spec: spec{oifLo: true}, desc: "loopback packets", opens: true},
		}
	}
	if s.Loopback {
		var out []flow
		for _, pp := range ports {
			to, from := "loopback packets to "+pp.String(), "loopback replies from "+pp.String()
			out = append(out,
				flow{hooks: inHooks, spec: spec{iifLo: true, proto: pp.proto, dport: pp.port}, desc: to},
				flow{hooks: inHooks, spec: replySpec(spec{iifLo: true}, pp.proto, pp.port), desc: from},
				flow{hooks: outHooks, spec: spec{oifLo: true, proto: pp.proto, dport: pp.port}, desc: to, opens: true},
				flow{hooks: outHooks, spec: replySpec(spec{oifLo: true}, pp.proto, pp.port), desc: from})
		}
		return out
	}
	p := s.Proto
	return []flow{
		{hooks: inHooks, spec: spec{proto: p, dport: s.Port, local: true}, desc: "requests to " + s.String(), opens: true, request: true},
		{hooks: inHooks, spec: replySpec(spec{iifLo: true}, p, s.Port), desc: "replies from " + s.String() + " to local clients"},
		{hooks: outHooks, spec: replySpec(spec{}, p, s.Port), desc: "replies from " + s.String()},
		{hooks: outHooks, spec: spec{oifLo: true, proto: p, dport: s.Port}, desc: "local clients' requests to " + s.String(), opens: true},
	}
}

// notrackRule is one NOTRACK rule: the hook and the packets.
type notrackRule struct {
	hook Hook
	spec spec
}

// notrackRules are the NOTRACK rules for the selection. A loopback packet
// is tracked (or not) when it leaves through output and keeps that when it
// comes back in through lo, so the output rule is the one that matters;
// the prerouting rule covers anything entering on lo that did not pass
// output, and is the pair operators know. Narrowed to ports, each port
// has the packets to it (dport) and the replies from it (sport) on both.
func (s Selector) notrackRules(ports []protoPort) []notrackRule {
	if s.Loopback && ports == nil {
		return []notrackRule{{HookPrerouting, spec{iifLo: true}}, {HookOutput, spec{oifLo: true}}}
	}
	if s.Loopback {
		var out []notrackRule
		for _, h := range []Hook{HookPrerouting, HookOutput} {
			for _, pp := range ports {
				s := spec{iifLo: h == HookPrerouting, oifLo: h == HookOutput, proto: pp.proto}
				to := s
				to.dport = pp.port
				out = append(out, notrackRule{h, to}, notrackRule{h, replySpec(s, pp.proto, pp.port)})
			}
		}
		return out
	}
	p := s.Proto
	return []notrackRule{
		{HookPrerouting, spec{proto: p, dport: s.Port, local: true}},
		{HookOutput, replySpec(spec{}, p, s.Port)},
		{HookOutput, spec{oifLo: true, proto: p, dport: s.Port}},
	}
}

// nfprotos are the address families of a table's packets.
func nfprotos(f Family) []uint8 {
	switch f {
	case "ip":
		return []uint8{2}
	case "ip6":
		return []uint8{10}
	case "inet":
		return []uint8{2, 10}
	}
	return nil
}

// insertion is the accept rules one chain needs.
type insertion struct {
	table *Table
	chain *Chain
	at    int // 0-based index of the rule they go before
	specs []spec
}

// PlanNotrack plans NOTRACK for the selected traffic in the ruleset, with
// commands for target t:
//
//   - in every chain the untracked packets cross (not nat chains, which
//     untracked packets skip) where a rule that looks at conntrack may see
//     them before anything decides, and they could end up dropped, an
//     accept of them (… ct state untracked accept, or … -m conntrack
//     --ctstate UNTRACKED -j ACCEPT, narrowed to the selected packets)
//     goes right before that rule, in the operator's own tables (nft
//     insert … position HANDLE, iptables -I CHAIN N); every rule above it
//     still applies;
//   - the NOTRACK rules go in ctdoctor's own nft table (inet, one per
//     selector) at priority -300, before conntrack, on prerouting and
//     output; without nft, in the iptables raw table;
//   - nothing is planned for what the ruleset already does (a plan made
//     after applying one is empty).
//
// It refuses with a [*RefusedError] NOTRACK for traffic a NAT rule or a
// conntrack helper may apply to, and a service whose port the firewall
// does not open to everyone.
func PlanNotrack(rs *Ruleset, sel Selector, t Target) (*Plan, error) {
	if err := sel.Validate(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if rs == nil {
		return nil, errors.New("plan: no ruleset")
	}
	ports, notes, err := loopbackScope(rs, sel)
	if err != nil {
		return nil, err
	}
	if err := checkRefusals(rs, sel, ports); err != nil {
		return nil, err
	}
	if pp := (protoPort{sel.Proto, sel.Port}); !sel.Loopback && !sourcePortSafe(rs, sel, pp) {
		return nil, &RefusedError{Selector: sel, Reason: ErrSourcePort,
			Rule:   fmt.Sprintf("net.ipv4.ip_unprivileged_port_start = %d", rs.unprivilegedPortStart()),
			Detail: "untracking " + sel.String() + " means untracking the packets this host sends from the port, and not every chain they cross accepts new packets from it; " + sourcePortWhy(rs, []protoPort{pp})}
	}
	if err := staleOwnRules(rs, sel, ports); err != nil {
		return nil, err
	}
	p := &Plan{Selector: sel, Target: t, Notes: notes}
	if ports != nil {
		p.Notes = append(p.Notes, fmt.Sprintf("loopback is untracked only to and from %s: the firewall accepts new loopback connections to these ports, and not to every port", portList(ports)))
	}
	inserts, err := planAccepts(rs, sel, ports, p)
	if err != nil {
		return nil, err
	}
	missing, err := missingNotrack(rs, sel, ports)
	if err != nil {
		return nil, err
	}
	if len(inserts) == 0 && len(missing) == 0 {
		return p, nil
	}
	if err := buildSteps(rs, sel, ports, t, p, inserts, missing); err != nil {
		return nil, err
	}
	return p, nil
}

// checkRefusals refuses traffic that a NAT rule or a helper assignment may
// apply to, in any table of any backend.
func checkRefusals(rs *Ruleset, sel Selector, ports []protoPort) error {
	for _, t := range rs.Tables {
		if nfprotos(t.Family) == nil {
			continue
		}
		for _, c := range t.Chains {
			hooks := []Hook{c.Hook}
			if !c.Base() {
				hooks = []Hook{HookPrerouting, HookInput, HookOutput, HookPostrouting}
			}
			for _, r := range c.Rules {
				if r.NAT == "" && r.Helper == "" {
					continue
				}
				for _, f := range sel.flows(ports) {
					if !f.opens || !slices.ContainsFunc(hooks, func(h Hook) bool { return slices.Contains(f.hooks, h) }) {
						continue
					}
					k := f.spec.class(hooks[0], f.desc)
					k.ctState = 0
					if r.matches(k, true) == no {
						continue
					}
					if r.NAT != "" {
						return &RefusedError{Selector: sel, Reason: ErrNATed, Rule: where(t, c, r),
							Detail: fmt.Sprintf("this %s rule may apply to %s; NAT needs the connection's conntrack entry, so these packets must stay tracked", r.NAT, f.desc)}
					}
					return &RefusedError{Selector: sel, Reason: ErrHelper, Rule: where(t, c, r),
						Detail: fmt.Sprintf("this rule attaches the %q conntrack helper, which may apply to %s; helpers need the connection's entry, so these packets must stay tracked", r.Helper, f.desc)}
				}
			}
		}
	}
	return nil
}

// planAccepts finds, for every filter chain the untracked packets cross,
// whether a rule that looks at conntrack may see them before anything
// accepts them, and where the accept must go.
func planAccepts(rs *Ruleset, sel Selector, ports []protoPort, p *Plan) ([]insertion, error) {
	var out []insertion
	for _, t := range rs.Tables {
		fams := nfprotos(t.Family)
		if fams == nil || isOurs(t, sel) {
			continue
		}
		for _, c := range t.Chains {
			if !c.Base() || c.Type == "nat" {
				continue
			}
			if c.Hook == HookForward {
				if chainUsesCt(t, c) {
					p.Notes = append(p.Notes, fmt.Sprintf("%s chain %s (forward) is left as it is: the untracked packets are for this host, they never cross forward", t, c.Name))
				}
				continue
			}
			ins := insertion{table: t, chain: c, at: len(c.Rules)}
			requests := false // the service's requests need an accept here
			for _, f := range sel.flows(ports) {
				if !slices.Contains(f.hooks, c.Hook) {
					continue
				}
				for _, fam := range fams {
					k := f.spec.class(c.Hook, f.desc)
					k.nfproto = fam
					o, i := walk(t, c, k)
					if o != needsAccept || fate(t, c, k, 0) == yes {
						// Nothing looks at conntrack before the packets are
						// decided, or the chain accepts untracked packets
						// anyway (it drops nothing they could meet): an
						// accept would only skip its later rules.
						continue
					}
					ins.at = min(ins.at, i)
					if !slices.Contains(ins.specs, f.spec) {
						ins.specs = append(ins.specs, f.spec)
					}
					requests = requests || f.request
				}
			}
			if len(ins.specs) == 0 {
				if chainUsesCt(t, c) {
					p.Notes = append(p.Notes, fmt.Sprintf("%s chain %s is left as it is: untracked %s traffic is decided there before any rule looks at conntrack, or is accepted anyway", t, c.Name, sel))
				}
				continue
			}
			if requests {
				if err := checkOpen(t, c, sel, ins.at); err != nil {
					return nil, err
				}
			}
			out = append(out, ins)
		}
	}
	return out, nil
}

// checkOpen refuses a service whose new connections the chain does not
// accept from everyone after the insertion point: the accept of untracked
// requests would open it wider than the operator did.
func checkOpen(t *Table, c *Chain, sel Selector, at int) error {
	for _, f := range sel.flows(nil) {
		if !f.request {
			continue
		}
		k := f.spec.class(c.Hook, f.desc)
		k.ctState = CtNew
		if fate(t, c, k, at) == yes {
			continue
		}
		rule := fmt.Sprintf("%s chain %s, policy %s", t, c.Name, c.Policy)
		detail := fmt.Sprintf("new connections to %s are not accepted from every address and interface by this chain; "+
			"accepting untracked packets to the port would open it wider than the firewall does "+
			"(a port reached only over loopback is covered by NOTRACK for loopback)", sel)
		return &RefusedError{Selector: sel, Reason: ErrRestricted, Rule: rule, Detail: detail}
	}
	return nil
}

// chainUsesCt says whether a chain, or one it jumps to, looks at conntrack.
func chainUsesCt(t *Table, c *Chain) bool {
	seen := map[string]bool{}
	var rec func(c *Chain) bool
	rec = func(c *Chain) bool {
		if seen[c.Name] {
			return false
		}
		seen[c.Name] = true
		for _, r := range c.Rules {
			if r.usesCt() {
				return true
			}
			for _, j := range r.jumps() {
				if sub := t.Chain(j); sub != nil && rec(sub) {
					return true
				}
			}
		}
		return false
	}
	return rec(c)
}

// isOurs says whether the table is ctdoctor's NOTRACK table for sel.
func isOurs(t *Table, sel Selector) bool {
	return t.Backend == BackendNft && t.Family == "inet" && t.Name == sel.TableName()
}

// missingNotrack returns the NOTRACK rules the ruleset lacks: a rule is
// there when, for IPv4 and IPv6 alike, a chain before conntrack (priority
// below -200) at its hook untracks all of its packets.
func missingNotrack(rs *Ruleset, sel Selector, ports []protoPort) ([]notrackRule, error) {
	var missing []notrackRule
	for _, n := range sel.notrackRules(ports) {
		for _, fam := range []uint8{2, 10} {
			k := n.spec.class(n.hook, "")
			k.nfproto, k.ctState = fam, 0
			if !notracked(rs, k) {
				missing = append(missing, n)
				break
			}
		}
	}
	if len(missing) > 0 {
		for _, t := range rs.Tables {
			if isOurs(t, sel) {
				return nil, fmt.Errorf("%w: table inet %s exists but does not untrack all the %s traffic a plan would; delete it (nft delete table inet %s) and plan again",
					ErrConflict, t.Name, sel, t.Name)
			}
		}
	}
	return missing, nil
}

// staleOwnRules refuses (a [*RefusedError] with the reason ErrConflict)
// ctdoctor's own NOTRACK rules (its table for sel, or iptables rules with
// its comment) that untrack by source port more than a plan does now: a
// TCP rule that takes connection-opening SYNs (rules written before
// replies were told apart from new connections), or replies of another
// protocol from a port a plan now leaves tracked. Left in place they
// would make a plan look done while a local program sending from that
// port reaches ports the firewall drops. A refusal, not a failure, so
// the rest of a plan (sysctls) is still made.
func staleOwnRules(rs *Ruleset, sel Selector, ports []protoPort) error {
	keep := map[protoPort]bool{}
	for _, n := range sel.notrackRules(ports) {
		if n.spec.sport != 0 {
			keep[protoPort{n.spec.proto, n.spec.sport}] = true
		}
	}
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			if c.Hook != HookPrerouting && c.Hook != HookOutput || c.Priority >= PriorityConntrack || c.Type == "nat" {
				continue
			}
			for _, r := range c.Rules {
				if !r.Notrack || !isOurs(t, sel) && r.Comment != sel.Comment() {
					continue
				}
				pp, ok := ruleSourcePort(r)
				if !ok {
					continue
				}
				stale := ""
				if pp.proto == "tcp" {
					for _, fam := range nfprotos(t.Family) {
						k := class{hook: c.Hook, l4proto: protoNumbers["tcp"], nfproto: fam, sport: int(pp.port), dport: -1, flags: opening}
						if sel.Loopback {
							k.iif, k.oif, k.local = map[Hook]string{HookPrerouting: "lo"}[c.Hook], map[Hook]string{HookOutput: "lo"}[c.Hook], true
						}
						if r.matches(k, true) != no {
							stale = "connection-opening SYNs from " + pp.String()
						}
					}
				} else if !keep[pp] {
					stale = "replies from " + pp.String() + " by their source port alone"
				}
				if stale != "" {
					return &RefusedError{Selector: sel, Reason: ErrConflict, Rule: where(t, c, r),
						Detail: fmt.Sprintf("this rule of an earlier ctdoctor plan untracks %s, which a plan no longer does: a local program "+
							"sending from that port to a port the firewall drops is untracked and accepted; undo that plan "+
							"(ctdoctor rollback, or its undo commands) and plan again", stale)}
				}
			}
		}
	}
	return nil
}

// ruleSourcePort returns the protocol and single source port a rule
// matches (both positive conditions), if it has them.
func ruleSourcePort(r *Rule) (protoPort, bool) {
	var (
		pp       protoPort
		hasProto bool
	)
	for _, c := range r.Conds {
		if c.Neg || len(c.Values) != 1 || c.Values[0].From != c.Values[0].To {
			continue
		}
		switch v := c.Values[0].From; c.Field {
		case FieldL4Proto:
			for name, n := range protoNumbers {
				if uint64(n) == v {
					pp.proto, hasProto = name, true
				}
			}
		case FieldSPort:
			pp.port = uint16(v)
		}
	}
	return pp, hasProto && pp.port != 0
}

func notracked(rs *Ruleset, k class) bool {
	for _, t := range rs.Tables {
		if !slices.Contains(nfprotos(t.Family), k.nfproto) {
			continue
		}
		for _, c := range t.Chains {
			if c.Hook != k.hook || c.Priority >= PriorityConntrack || c.Type == "nat" {
				continue
			}
			for _, r := range c.Rules {
				m := r.matches(k, true)
				if m == no {
					continue
				}
				if r.Notrack && m == yes {
					return true
				}
				if terminal(r.Verdict) || r.jumps() != nil || r.Verdict == "vmap" || r.Verdict == "target" {
					break // the packets may leave the chain before a NOTRACK
				}
			}
		}
	}
	return false
}

// nftName accepts the table and chain names a plan can write unquoted.
var nftName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// iptName accepts iptables chain names a plan can write unquoted.
var iptName = regexp.MustCompile(`^[A-Za-z0-9_.+-]+$`)

func buildSteps(rs *Ruleset, sel Selector, ports []protoPort, t Target, p *Plan, inserts []insertion, missing []notrackRule) error {
	pre := t.Prefix()
	comment := sel.Comment()
	tools := rs.Tools
	var (
		nftLines, nftWhat []string
		nftUndoChains     []string // "inet fw input"
		nftChanges        []Change
		iptSteps          []Step
	)
	// Accept rules, one step per iptables command; nft ones join the batch.
	iptByCmd := map[string]*Step{}
	var iptOrder []string
	for _, in := range inserts {
		before := in.chain.Rules[in.at]
		switch in.table.Backend {
		case BackendNft:
			if !nftName.MatchString(in.table.Name) || !nftName.MatchString(in.chain.Name) {
				return fmt.Errorf("%w: %s chain %q: a name a plan would have to quote", ErrUnsupported, in.table, in.chain.Name)
			}
			if before.Handle == 0 {
				return fmt.Errorf("%w: %s chain %s: rule %d has no handle", ErrUnsupported, in.table, in.chain.Name, before.Index)
			}
			if tools.Nft == "" {
				return fmt.Errorf("%w: %s needs an accept rule but nft is not installed", ErrUnsupported, in.table)
			}
			chainRef := fmt.Sprintf("%s %s %s", in.table.Family, in.table.Name, in.chain.Name)
			for _, s := range in.specs {
				rule := strings.TrimSpace(s.nft()+" ct state untracked accept") + " comment " + strconv.Quote(comment)
				nftLines = append(nftLines, fmt.Sprintf("insert rule %s position %d %s", chainRef, before.Handle, rule))
				nftChanges = append(nftChanges, Change{Action: "insert-rule", Family: in.table.Family, Table: in.table.Name,
					Chain: in.chain.Name, BeforeHandle: before.Handle, Rule: rule, Comment: comment})
			}
			nftWhat = append(nftWhat, fmt.Sprintf("accept untracked %s in %s chain %s, before handle %d (%s), its first rule that looks at conntrack",
				specsDesc(sel, in.specs), in.table, in.chain.Name, before.Handle, before))
			nftUndoChains = append(nftUndoChains, chainRef)
		case BackendIptablesLegacy, BackendIptablesNft:
			cmd := tools.iptables(in.table.Backend, in.table.Family)
			if cmd == "" {
				return fmt.Errorf("%w: %s needs an accept rule but its command (%s for %s) is not installed",
					ErrUnsupported, in.table, in.table.Backend, in.table.Family)
			}
			if !iptName.MatchString(in.chain.Name) || !iptName.MatchString(in.table.Name) {
				return fmt.Errorf("%w: %s chain %q: a name a plan would have to quote", ErrUnsupported, in.table, in.chain.Name)
			}
			st := iptByCmd[cmd]
			if st == nil {
				st = &Step{Kind: StepIptables, Backend: in.table.Backend}
				iptByCmd[cmd] = st
				iptOrder = append(iptOrder, cmd)
			}
			tflag := ""
			if in.table.Name != "filter" {
				tflag = "-t " + in.table.Name + " "
			}
			for _, s := range in.specs {
				args := strings.TrimSpace(s.ipt()+" -m conntrack --ctstate UNTRACKED") + " -m comment --comment " + strconv.Quote(comment) + " -j ACCEPT"
				st.Commands = append(st.Commands, fmt.Sprintf("%s%s -w %s-I %s %d %s", pre, cmd, tflag, in.chain.Name, in.at+1, args))
				st.Undo = append(st.Undo, fmt.Sprintf("%s%s -w %s-D %s %s", pre, cmd, tflag, in.chain.Name, args))
				st.Changes = append(st.Changes, Change{Action: "insert-rule", Family: in.table.Family, Table: in.table.Name,
					Chain: in.chain.Name, Index: in.at + 1, Rule: args, Comment: comment})
			}
			st.What = joinWhat(st.What, fmt.Sprintf("accept untracked %s in %s chain %s, at position %d (before %q), its first rule that looks at conntrack",
				specsDesc(sel, in.specs), in.table, in.chain.Name, in.at+1, before.Text))
		default:
			return fmt.Errorf("%w: table %s has unknown backend %q", ErrUnsupported, in.table, in.table.Backend)
		}
	}
	acceptWhy := "Packets that are not tracked have the conntrack state UNTRACKED: they no longer match " +
		"'ct state established,related' or 'ct state new' (--state NEW, ESTABLISHED), so without this accept rule " +
		"the chain would treat them as it treats unknown traffic (its policy or final reject) and the service would stop answering. " +
		"The rule goes before the chain's first rule that looks at conntrack, so every rule above it still applies. " +
		"From now on these packets are accepted by this chain whatever port they use"
	switch {
	case sel.Loopback && ports != nil:
		acceptWhy = "Packets that are not tracked have the conntrack state UNTRACKED: they no longer match " +
			"'ct state established,related' or 'ct state new' (--state NEW, ESTABLISHED), so without this accept rule " +
			"the chain would treat them as it treats unknown traffic (its policy or final reject) and the service would stop answering. " +
			"The rule goes before the chain's first rule that looks at conntrack, so every rule above it still applies. " +
			"It accepts only untracked loopback packets to and from " + portList(ports) + ", the ports the firewall already accepts " +
			"new loopback connections to; loopback traffic to any other port stays tracked and meets the chain's rules as before, " +
			"so what the firewall drops on loopback it still drops."
	case sel.Loopback:
		acceptWhy += " (loopback traffic never leaves the host; the firewall already accepts every new loopback connection)."
	default:
		acceptWhy += "; the chain already accepts new connections to the port from everyone."
	}
	for _, cmd := range iptOrder {
		st := iptByCmd[cmd]
		st.Why = acceptWhy
		iptSteps = append(iptSteps, *st)
	}
	p.Steps = append(p.Steps, iptSteps...)

	// NOTRACK: ctdoctor's own nft table, or the iptables raw table.
	var rawSteps []Step
	tableName := sel.TableName()
	notrackWhy := "NOTRACK makes conntrack skip these packets, so they take no table entry. It must run before conntrack " +
		"(priority -200), so the chains run at the raw priority, -300. A packet is tracked where it first appears: " +
		"arriving packets in prerouting, packets this host sends in output (loopback packets are tracked when they leave, " +
		"so loopback needs both hooks)."
	scope := sel.String()
	if sel.Loopback && ports != nil {
		scope = "loopback traffic to and from " + portList(ports)
		notrackWhy += " Only loopback traffic to and from " + portList(ports) + " is untracked (to the port, and the replies from it): " +
			"these are the ports every chain the packets cross accepts new loopback connections to. The rest of loopback stays " +
			"tracked: the firewall drops new loopback connections to other ports, and untracking them would need an accept " +
			"of untracked packets that would let them through."
	}
	if sel.Loopback && ports != nil {
		notrackWhy += replyWhy(rs, sel, ports)
	} else if !sel.Loopback {
		notrackWhy += replyWhy(rs, sel, []protoPort{{sel.Proto, sel.Port}})
	}
	if len(missing) > 0 && tools.Nft != "" && rs.Nftables {
		decl := []string{"create table inet " + tableName}
		for _, h := range []Hook{HookPrerouting, HookOutput} {
			var rules []string
			for _, n := range missing {
				if n.hook == h {
					rules = append(rules, fmt.Sprintf("add rule inet %s %s %s notrack comment %s", tableName, h, n.spec.nft(), strconv.Quote(comment)))
				}
			}
			if len(rules) == 0 {
				continue
			}
			decl = append(decl, fmt.Sprintf("add chain inet %s %s { type filter hook %s priority %d; policy accept; }", tableName, h, h, PriorityRaw))
			decl = append(decl, rules...)
		}
		nftLines = append(nftLines, decl...)
		nftChanges = append(nftChanges, Change{Action: "add-table", Family: "inet", Table: tableName, Rule: strings.Join(decl, "\n"), Comment: comment})
		nftWhat = append(nftWhat, fmt.Sprintf("stop tracking %s: table inet %s, NOTRACK at priority -300 on %s", scope, tableName, hooksOf(missing)))
	} else if len(missing) > 0 {
		steps, notes, err := iptablesNotrack(rs, sel, scope, pre, missing)
		if err != nil {
			return err
		}
		p.Notes = append(p.Notes, notes...)
		for i := range steps {
			steps[i].Why = notrackWhy
		}
		rawSteps = steps
	}
	if len(nftLines) > 0 {
		st := Step{Kind: StepNft, Backend: BackendNft, Changes: nftChanges}
		st.What = strings.Join(nftWhat, "; ")
		st.Commands = []string{pre + "nft -f - <<'EOF'\n" + strings.Join(nftLines, "\n") + "\nEOF"}
		st.Undo = []string{nftUndo(pre, comment, nftUndoChains, slices.ContainsFunc(nftChanges, func(c Change) bool { return c.Action == "add-table" }), tableName)}
		switch {
		case len(nftUndoChains) > 0 && len(missing) > 0:
			st.Why = acceptWhy + " " + notrackWhy + " All of it is one nft batch: it applies completely or not at all."
		case len(nftUndoChains) > 0:
			st.Why = acceptWhy
		default:
			st.Why = notrackWhy
		}
		p.Steps = append(p.Steps, st)
	}
	p.Steps = append(p.Steps, rawSteps...)
	return nil
}

// replyWhy says how the replies from the ports are told apart from what
// a local program sends from those ports, and why that is safe.
func replyWhy(rs *Ruleset, sel Selector, ports []protoPort) string {
	var tcp, low, open, asked []protoPort
	for _, pp := range ports {
		switch {
		case pp.proto == "tcp":
			tcp = append(tcp, pp)
		case int(pp.port) < rs.unprivilegedPortStart():
			low = append(low, pp)
		case sourcePortSafe(rs, Selector{Loopback: sel.Loopback, Proto: sel.Proto, Port: sel.Port}, pp):
			open = append(open, pp)
		default:
			asked = append(asked, pp)
		}
	}
	var b strings.Builder
	if len(tcp) > 0 {
		fmt.Fprintf(&b, " Replies from %s are told apart by their source port and their TCP flags: a packet from the port that opens "+
			"a connection (SYN without ACK) stays tracked, so a local program that connects from the port (as its source port) "+
			"to a port the firewall drops meets the firewall's rules and is still dropped.", portList(tcp))
	}
	if other := append(append(append([]protoPort{}, low...), open...), asked...); len(other) > 0 {
		fmt.Fprintf(&b, " %s has no flag that marks a new connection, so replies from %s are told apart by their source port alone:",
			protoTitles(other), portList(other))
		var why []string
		if len(low) > 0 {
			why = append(why, fmt.Sprintf("only privileged programs may send from %s (below net.ipv4.ip_unprivileged_port_start, %d)",
				portList(low), rs.unprivilegedPortStart()))
		}
		if len(open) > 0 {
			why = append(why, fmt.Sprintf("the firewall accepts new packets from %s anyway", portList(open)))
		}
		if len(asked) > 0 {
			why = append(why, fmt.Sprintf("any local program may send from %s, and as asked, its packets from there are untracked and accepted too", portList(asked)))
		}
		b.WriteString(" " + strings.Join(why, "; ") + ".")
	}
	return b.String()
}

// nftUndo is one command that deletes the inserted rules (found again by
// their comment: nft deletes rules by handle only) and ctdoctor's table,
// in one batch.
func nftUndo(pre, comment string, chains []string, table bool, tableName string) string {
	if len(chains) == 0 {
		return pre + "nft delete table inet " + tableName
	}
	var b strings.Builder
	b.WriteString(pre + "sh -c '{ ")
	for _, ch := range chains {
		fmt.Fprintf(&b, `nft -a list chain %s | sed -n "s|.* comment \"%s\" # handle \([0-9][0-9]*\)\$|delete rule %s handle \1|p"; `, ch, comment, ch)
	}
	if table {
		fmt.Fprintf(&b, `echo "delete table inet %s"; `, tableName)
	}
	b.WriteString("} | nft -f -'")
	return b.String()
}

// iptablesNotrack writes the NOTRACK rules into the raw table of the
// backend the firewall uses, for iptables and ip6tables.
//
// A raw table that did not exist is created by the first rule; undo
// empties it but cannot delete it (iptables has no command for that): the
// returned notes say so.
func iptablesNotrack(rs *Ruleset, sel Selector, scope, pre string, missing []notrackRule) ([]Step, []string, error) {
	backend := BackendIptablesLegacy
	hasLegacy, hasNft := false, false
	for _, t := range rs.Tables {
		hasLegacy = hasLegacy || t.Backend == BackendIptablesLegacy
		hasNft = hasNft || t.Backend == BackendIptablesNft
	}
	switch {
	case hasNft && !hasLegacy:
		backend = BackendIptablesNft
	case !hasLegacy && rs.Tools.IptablesLegacy == "" && rs.Tools.IptablesNft != "":
		backend = BackendIptablesNft
	}
	comment := sel.Comment()
	var (
		steps []Step
		notes []string
	)
	for _, fam := range []Family{"ip", "ip6"} {
		cmd := rs.Tools.iptables(backend, fam)
		if cmd == "" {
			if fam == "ip" {
				return nil, nil, fmt.Errorf("%w: NOTRACK needs nft or %s for IPv4, and neither is installed", ErrUnsupported, backend)
			}
			continue
		}
		st := Step{Kind: StepIptables, Backend: backend,
			What: fmt.Sprintf("stop tracking %s: NOTRACK rules in %s's raw table (priority -300) on %s", scope, cmd, hooksOf(missing))}
		for _, n := range missing {
			chain := strings.ToUpper(string(n.hook))
			args := strings.TrimSpace(n.spec.ipt()+" -m comment --comment "+strconv.Quote(comment)) + " -j NOTRACK"
			st.Commands = append(st.Commands, fmt.Sprintf("%s%s -w -t raw -A %s %s", pre, cmd, chain, args))
			st.Undo = append(st.Undo, fmt.Sprintf("%s%s -w -t raw -D %s %s", pre, cmd, chain, args))
			st.Changes = append(st.Changes, Change{Action: "add-rule", Family: fam, Table: "raw", Chain: chain, Rule: args, Comment: comment})
		}
		steps = append(steps, st)
		if !slices.ContainsFunc(rs.Tables, func(t *Table) bool { return t.Backend == backend && t.Family == fam && t.Name == "raw" }) {
			notes = append(notes, fmt.Sprintf("%s has no raw table yet: the first rule creates it, and undo leaves it empty (no effect on any packet)", cmd))
		}
	}
	return steps, notes, nil
}

func hooksOf(rules []notrackRule) string {
	var hs []string
	for _, n := range rules {
		if !slices.Contains(hs, string(n.hook)) {
			hs = append(hs, string(n.hook))
		}
	}
	return strings.Join(hs, " and ")
}

func specsDesc(sel Selector, specs []spec) string {
	if sel.Loopback {
		var ports []protoPort
		for _, s := range specs {
			pp := protoPort{s.proto, max(s.dport, s.sport)}
			if pp.port != 0 && !slices.Contains(ports, pp) {
				ports = append(ports, pp)
			}
		}
		if len(ports) == 0 {
			return "loopback packets"
		}
		return "loopback packets to and from " + portList(ports)
	}
	var parts []string
	for _, s := range specs {
		switch {
		case s.dport != 0 && s.oifLo:
			parts = append(parts, "local requests to "+sel.String())
		case s.dport != 0:
			parts = append(parts, "requests to "+sel.String())
		case s.iifLo:
			parts = append(parts, "replies from "+sel.String()+" to local clients")
		default:
			parts = append(parts, "replies from "+sel.String())
		}
	}
	return strings.Join(parts, " and ")
}

func joinWhat(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
