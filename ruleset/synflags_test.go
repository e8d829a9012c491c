package ruleset

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// tcpClass is TCP packets with the given flags, at input.
func tcpClass(f flagSet) class {
	return class{hook: HookInput, l4proto: 6, dport: -1, sport: -1, flags: f}
}

// synAck is a SYN-ACK: a reply, not an opening.
var synAck = flagSet{mask: 0xff, value: TCPSyn | TCPAck}

// The flag conditions as iptables-save prints them, evaluated for a pure
// SYN (what opens a connection), for every packet but a SYN without ACK
// (what a reply-side NOTRACK takes) and for a SYN-ACK. The expectations
// follow from xt_tcp's test, (flags & mask) == cmp, inverted by "!".
func TestParseSaveTCPFlags(t *testing.T) {
	tables, err := ParseSave(strings.NewReader(`*filter
:INPUT ACCEPT [0:0]
-A INPUT -i lo -p tcp -m tcp --sport 8080 ! --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
-A INPUT -p tcp --syn -j DROP
-A INPUT -p tcp -m tcp --tcp-flags ALL NONE -j DROP
-A INPUT -p tcp -m tcp --tcp-flags NONE NONE -j DROP
-A INPUT -p tcp -m tcp --tcp-flags SYN,ACK SYN,FIN -j DROP
-A INPUT -p tcp -m tcp --tcp-flags ! SYN,ACK SYN -j DROP
-A INPUT -p tcp -m tcp --tcp-flags SYN,XYZ SYN -j DROP
COMMIT
`), BackendIptablesLegacy, "ip")
	if err != nil {
		t.Fatal(err)
	}
	r := tables[0].Chain("INPUT").Rules
	for i, want := range []struct {
		mask                   uint32
		neg                    bool
		opening, notOpen, sack tri
	}{
		{0x17, true, no, yes, yes},   // ! --syn
		{0x17, false, yes, no, no},   // --syn
		{0x17, false, yes, no, no},   // --syn, as written
		{0xff, false, no, maybe, no}, // ALL NONE: no flag set
		{0xff, false, yes, yes, yes}, // NONE NONE: always
		{0x12, false, no, no, no},    // SYN,ACK SYN,FIN: FIN outside the mask, never
		{0x12, true, no, yes, yes},   // ! SYN,ACK SYN (old form): anything but a SYN without ACK, nft's reply condition
	} {
		c := cond(r[i], FieldTCPFlags)
		if c == nil || c.Mask != want.mask || c.Neg != want.neg {
			t.Errorf("rule %d (%s): %+v, want mask %#x neg %v", i+1, r[i].Text, c, want.mask, want.neg)
			continue
		}
		for _, k := range []struct {
			name string
			f    flagSet
			want tri
		}{{"a pure SYN", opening, want.opening}, {"not a SYN without ACK", notOpening, want.notOpen}, {"a SYN-ACK", synAck, want.sack}} {
			if got := c.eval(tcpClass(k.f)); got != k.want {
				t.Errorf("rule %d (%s) for %s: %v, want %v", i+1, r[i].Text, k.name, got, k.want)
			}
		}
		// On UDP the flags byte is something else: never decided.
		if u := (class{l4proto: 17, flags: opening}); c.eval(u) != maybe {
			t.Errorf("rule %d for UDP: %v, want maybe", i+1, c.eval(u))
		}
	}
	if c := cond(r[7], FieldOther); c == nil || !strings.Contains(c.Text, "SYN,XYZ") || cond(r[7], FieldTCPFlags) != nil {
		t.Errorf("an unknown flag: %+v, want a condition the planner does not interpret", r[7])
	}
	if _, err := ParseSave(strings.NewReader("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --tcp-flags SYN -j DROP\nCOMMIT\n"), BackendIptablesLegacy, "ip"); err == nil ||
		!strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "--tcp-flags needs") {
		t.Errorf("--tcp-flags with one list: got %v", err)
	}
}

// The netlink form of the flag conditions, as nft 1.0.6 encodes them
// (nft --debug=netlink): tcp flags & (syn | ack) != syn (listed back as
// "tcp flags != syn / syn,ack"), tcp flags syn (& syn != 0), tcp flags ==
// syn, and iptables' xt tcp match (older iptables-nft; 1.8.9 writes
// --syn as payload expressions like nft's).
func TestDecodeNftTCPFlags(t *testing.T) {
	l4tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
	}
	flags := func(mask byte, op expr.CmpOp, v byte) []expr.Any {
		out := append([]expr.Any{}, l4tcp...)
		out = append(out, &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1, DestRegister: 1})
		if mask != 0 {
			out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}})
		}
		return append(out, &expr.Cmp{Op: op, Register: 1, Data: []byte{v}}, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	for _, tc := range []struct {
		name                   string
		exprs                  []expr.Any
		mask                   uint32
		neg                    bool
		str                    string
		opening, notOpen, sack tri
	}{
		{"tcp flags & (syn | ack) != syn", flags(0x12, expr.CmpOpNeq, 0x02), 0x12, true, "tcp flags & (syn | ack) != syn", no, yes, yes},
		{"tcp flags & (fin | syn | rst | ack) != syn", flags(0x17, expr.CmpOpNeq, 0x02), 0x17, true, "tcp flags & (fin | syn | rst | ack) != syn", no, yes, yes},
		{"tcp flags syn", flags(0x02, expr.CmpOpNeq, 0), 0x02, true, "tcp flags & syn != 0x0", yes, maybe, yes},
		{"tcp flags == syn", flags(0, expr.CmpOpEq, 0x02), 0, false, "tcp flags == syn", maybe, no, no},
	} {
		r := decodeRule(&nftables.Rule{Exprs: tc.exprs}, nil)
		c := cond(r, FieldTCPFlags)
		if c == nil || c.Mask != tc.mask || c.Neg != tc.neg || r.Verdict != "accept" {
			t.Errorf("%s: %+v", tc.name, r)
			continue
		}
		if s := c.String(); s != tc.str {
			t.Errorf("%s: String() = %q, want %q", tc.name, s, tc.str)
		}
		for _, k := range []struct {
			name string
			f    flagSet
			want tri
		}{{"a pure SYN", opening, tc.opening}, {"not a SYN without ACK", notOpening, tc.notOpen}, {"a SYN-ACK", synAck, tc.sack}} {
			if got := r.matches(tcpClass(k.f), false); got != k.want {
				t.Errorf("%s for %s: %v, want %v", tc.name, k.name, got, k.want)
			}
		}
	}

	// xt tcp: --sport 8080 ! --tcp-flags FIN,SYN,RST,ACK SYN.
	r := decodeRule(&nftables.Rule{Exprs: append(append([]expr.Any{}, l4tcp...),
		&expr.Match{Name: "tcp", Info: &xt.Tcp{SrcPorts: [2]uint16{8080, 8080}, DstPorts: [2]uint16{0, 0xffff},
			FlagsMask: 0x17, FlagsCmp: 0x02, InvFlags: xt.TcpInvFlags}},
		&expr.Target{Name: "NOTRACK", Info: &xt.Unknown{}})}, nil)
	if s, d, f := cond(r, FieldSPort), cond(r, FieldDPort), cond(r, FieldTCPFlags); s == nil || s.Values[0] != (Range{8080, 8080}) || d != nil ||
		f == nil || f.Mask != 0x17 || !f.Neg || !r.Notrack {
		t.Errorf("xt tcp --sport 8080 ! --syn: %+v", r)
	}
	k := tcpClass(notOpening)
	k.sport = 8080
	if r.matches(k, true) != yes {
		t.Errorf("xt tcp --sport 8080 ! --syn does not take the replies from 8080")
	}
	k.flags = opening
	if r.matches(k, true) != no {
		t.Errorf("xt tcp --sport 8080 ! --syn takes a SYN from 8080")
	}
	// xt udp: --dport 53, ! --sport 1024:65535.
	r = decodeRule(&nftables.Rule{Exprs: []expr.Any{&expr.Match{Name: "udp", Info: &xt.Udp{SrcPorts: [2]uint16{1024, 0xffff},
		DstPorts: [2]uint16{53, 53}, InvFlags: xt.UdpInvSrcPorts}}}}, nil)
	if s, d := cond(r, FieldSPort), cond(r, FieldDPort); s == nil || !s.Neg || s.Values[0] != (Range{1024, 65535}) || d == nil || d.Values[0] != (Range{53, 53}) {
		t.Errorf("xt udp: %+v", r)
	}
	// A flags byte loaded from another offset is not the flags.
	r = decodeRule(&nftables.Rule{Exprs: []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 1, DestRegister: unix.NFT_REG32_00},
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG32_00, Data: []byte{0x50}}}}, nil)
	if cond(r, FieldTCPFlags) != nil || cond(r, FieldOther) == nil {
		t.Errorf("transport header @96,8: %+v", r)
	}
}

// The reply-side rules of a narrowed loopback plan and of a service plan
// leave out connection-opening SYNs (TCP); the request-side rules do not
// need to. Applied (here: the plan's iptables rules parsed back as
// iptables-save prints them), the plan is recognised as done, and a SYN
// from the open port is not untracked by it.
func TestPlanRepliesLeaveOutSyn(t *testing.T) {
	filter := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
	rs := iptRuleset(t, BackendIptablesLegacy, filter, "")
	rs.Tools.Nft = ""
	p := mustPlan(t, rs, Loopback())
	var accepts []string
	notracks := map[Family][]string{}
	for _, st := range p.Steps {
		for _, c := range st.Changes {
			switch c.Action {
			case "insert-rule":
				accepts = append(accepts, c.Rule)
			case "add-rule":
				notracks[c.Family] = append(notracks[c.Family], c.Chain+" "+c.Rule)
			}
		}
	}
	for _, r := range append(append(append([]string{}, accepts...), notracks["ip"]...), notracks["ip6"]...) {
		if strings.Contains(r, "--sport 8080") != strings.Contains(r, "--sport 8080 ! --syn") || strings.Contains(r, "--dport 8080 ! --syn") {
			t.Errorf("want ! --syn on the replies (source port) only: %s", r)
		}
	}
	if len(accepts) != 2 || len(notracks["ip"]) != 4 || len(notracks["ip6"]) != 4 {
		t.Fatalf("want 2 accepts and 4 NOTRACK rules per family, got %q %q", accepts, notracks)
	}

	// The plan applied, as iptables-save prints it back (! --syn is
	// listed as ! --tcp-flags FIN,SYN,RST,ACK SYN).
	printed := func(rule string) string {
		return strings.ReplaceAll(rule, "! --syn", "! --tcp-flags FIN,SYN,RST,ACK SYN")
	}
	applied := strings.Replace(filter, "-A INPUT -m conntrack --ctstate RELATED",
		"-A INPUT "+printed(accepts[0])+"\n-A INPUT "+printed(accepts[1])+"\n-A INPUT -m conntrack --ctstate RELATED", 1)
	raw := func(fam Family) string {
		s := "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
		for _, n := range notracks[fam] {
			s += "-A " + printed(n) + "\n"
		}
		return s + "COMMIT\n"
	}
	done := iptRuleset(t, BackendIptablesLegacy, applied+raw("ip"), raw("ip6"))
	done.Tools.Nft = ""
	if again := mustPlan(t, done, Loopback()); !again.Empty() {
		t.Errorf("the applied rules are not recognised:\n%s", strings.Join(again.Commands(), "\n"))
	}
	for _, h := range []Hook{HookPrerouting, HookOutput} {
		k := replySpec(spec{iifLo: h == HookPrerouting, oifLo: h == HookOutput}, "tcp", 8080).class(h, "")
		k.nfproto, k.ctState = 2, 0
		if !notracked(done, k) {
			t.Errorf("%s: the replies from 8080 are not untracked by the applied rules", h)
		}
		k.flags = opening
		if notracked(done, k) {
			t.Errorf("%s: a SYN from 8080 is untracked by the applied rules", h)
		}
	}

	// A service: its replies leave out SYNs too.
	sp := mustPlan(t, nftRuleset("fw", "input"), Service("tcp", 8081))
	if !hasCommand(sp, "add rule inet ctdoctor_notrack_tcp_8081 output tcp sport 8081 tcp flags & (syn | ack) != syn notrack") ||
		hasCommand(sp, "dport 8081 tcp flags") {
		t.Errorf("service plan:\n%s", strings.Join(sp.Commands(), "\n"))
	}
	if why := p.Steps[len(p.Steps)-1].Why; !strings.Contains(why, "SYN without ACK") || strings.Contains(why, "accepted too") {
		t.Errorf("the NOTRACK step's why should say SYNs stay tracked: %s", why)
	}
}

// An earlier plan's rules that untrack replies by source port alone (TCP
// SYNs included) make a later plan refuse with ErrConflict instead of
// reporting nothing to do; the operator's own such rules do not.
func TestPlanStaleOwnRules(t *testing.T) {
	oldTable := func(comment string) *Table {
		tb := &Table{Backend: BackendNft, Family: "inet", Name: "ctdoctor_notrack_lo"}
		for _, h := range []Hook{HookPrerouting, HookOutput} {
			f := FieldIIF
			if h == HookOutput {
				f = FieldOIF
			}
			c := &Chain{Name: string(h), Hook: h, Type: "filter", Priority: PriorityRaw, Policy: "accept"}
			for i, pf := range []Field{FieldDPort, FieldSPort} {
				c.Rules = append(c.Rules, &Rule{Handle: uint64(2 + i), Index: i + 1, Notrack: true, Comment: comment, Conds: []Cond{
					{Field: f, Values: []Range{{1, 1}}}, {Field: FieldL4Proto, Values: []Range{{6, 6}}}, {Field: pf, Values: []Range{{80, 80}}}}})
			}
			tb.Chains = append(tb.Chains, c)
		}
		return tb
	}
	// The demo firewall opens 80 and 8081; the old table covers 80 only
	// and is not the plan of today anyway: the stale rule is named first.
	rs := nftRuleset("fw", "input")
	rs.Tables = append(rs.Tables, oldTable("ctdoctor notrack lo"))
	_, err := PlanNotrack(rs, Loopback(), Target{})
	var re *RefusedError
	if !errors.Is(err, ErrConflict) || !errors.Is(err, ErrRefused) || !errors.As(err, &re) ||
		!strings.Contains(re.Detail, "connection-opening SYNs from tcp/80") || !strings.Contains(re.Detail, "rollback") ||
		!strings.Contains(re.Rule, "inet ctdoctor_notrack_lo chain prerouting handle 3") {
		t.Errorf("an earlier plan's table: got %v, want a refusal (ErrConflict) naming the rule and the SYNs from tcp/80", err)
	}
	// The same rules in iptables' raw table with ctdoctor's comment.
	raw := `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -o lo -p tcp -m tcp --sport 80 -m comment --comment "ctdoctor notrack lo" -j NOTRACK
COMMIT
`
	filter := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
	if _, err := PlanNotrack(iptRuleset(t, BackendIptablesNft, filter+raw, ""), Loopback(), Target{}); !errors.Is(err, ErrConflict) ||
		!strings.Contains(err.Error(), "iptables (iptables-nft) table raw chain OUTPUT rule 1") {
		t.Errorf("an earlier plan's iptables rule: got %v, want ErrConflict naming it", err)
	}
	// The operator's own rule (no ctdoctor comment) is theirs: planned.
	mine := strings.Replace(raw, ` -m comment --comment "ctdoctor notrack lo"`, "", 1)
	if _, err := PlanNotrack(iptRuleset(t, BackendIptablesNft, filter+mine, ""), Loopback(), Target{}); err != nil {
		t.Errorf("the operator's own NOTRACK: got %v, want a plan", err)
	}
	// An old service plan's table (tcp sport 8081 without the flags).
	rs = nftRuleset("fw", "input")
	rs.Tables = append(rs.Tables, &Table{Backend: BackendNft, Family: "inet", Name: "ctdoctor_notrack_tcp_8081", Chains: []*Chain{
		{Name: "output", Hook: HookOutput, Type: "filter", Priority: PriorityRaw, Policy: "accept", Rules: []*Rule{
			{Handle: 3, Index: 1, Notrack: true, Conds: []Cond{{Field: FieldL4Proto, Values: []Range{{6, 6}}}, {Field: FieldSPort, Values: []Range{{8081, 8081}}}}}}}}})
	if _, err := PlanNotrack(rs, Service("tcp", 8081), Target{}); !errors.Is(err, ErrConflict) {
		t.Errorf("an earlier service plan's table: got %v, want ErrConflict", err)
	}
}

// UDP (and the other protocols without a flag for a new connection):
// replies are told apart by their source port alone. A loopback port any
// program may send from stays tracked unless the selector asks for it;
// a port below ip_unprivileged_port_start is untracked; a service whose
// replies the firewall would not accept as new packets is refused.
func TestPlanSourcePortOnlyProtocols(t *testing.T) {
	v4 := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p udp -m udp --dport 53 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p udp -m udp --dport 5353 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
	rs := iptRuleset(t, BackendIptablesLegacy, v4, "")
	p := mustPlan(t, rs, Loopback())
	for _, want := range []string{`oif "lo" udp sport 53 notrack`, `oif "lo" udp dport 53 notrack`, `oif "lo" tcp sport 80 tcp flags`} {
		if !hasCommand(p, want) {
			t.Errorf("plan lacks %q:\n%s", want, strings.Join(p.Commands(), "\n"))
		}
	}
	if hasCommand(p, "5353") {
		t.Errorf("udp/5353 (any program may send from it) is untracked:\n%s", strings.Join(p.Commands(), "\n"))
	}
	notes := strings.Join(p.Notes, "\n")
	if !strings.Contains(notes, "udp/5353 stay tracked") || !strings.Contains(notes, "from 1024 up") {
		t.Errorf("notes should say why udp/5353 stays tracked: %q", notes)
	}
	why := p.Steps[len(p.Steps)-1].Why
	if !strings.Contains(why, "only privileged programs may send from udp/53") {
		t.Errorf("why should say udp/53's replies are safe: %s", why)
	}

	// In a namespace where any program may use any port (a container
	// runtime's ip_unprivileged_port_start=0), udp/53 stays tracked too.
	zero := 0
	rs.UnprivilegedPortStart = &zero
	p = mustPlan(t, rs, Loopback())
	if hasCommand(p, "udp") || !hasCommand(p, "tcp sport 80") {
		t.Errorf("ip_unprivileged_port_start=0: want tcp/80 only:\n%s", strings.Join(p.Commands(), "\n"))
	}
	// Asked for explicitly: udp/5353 is untracked, and the why says so.
	sel := Loopback()
	sel.SourcePortReplies = true
	rs.UnprivilegedPortStart = nil
	p = mustPlan(t, rs, sel)
	if !hasCommand(p, `oif "lo" udp sport 5353 notrack`) || !strings.Contains(p.Steps[len(p.Steps)-1].Why, "as asked") {
		t.Errorf("SourcePortReplies: want udp/5353 untracked, and said so:\n%s\n%s", strings.Join(p.Commands(), "\n"), p.Steps[len(p.Steps)-1].Why)
	}

	// Only udp/5353 open: nothing left to untrack.
	only := strings.Replace(strings.Replace(v4, "-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT\n", "", 1),
		"-A INPUT -p udp -m udp --dport 53 -m conntrack --ctstate NEW -j ACCEPT\n", "", 1)
	_, err := PlanNotrack(iptRuleset(t, BackendIptablesLegacy, only, ""), Loopback(), Target{})
	var re *RefusedError
	if !errors.Is(err, ErrSourcePort) || !errors.As(err, &re) || !strings.Contains(re.Detail, "udp/5353") {
		t.Errorf("only udp/5353 open: got %v, want ErrSourcePort", err)
	}

	// A service: udp/5353 under this firewall is refused (a local
	// program's packets from 5353 would be accepted on lo); udp/53 is not.
	if _, err := PlanNotrack(rs, Service("udp", 5353), Target{}); !errors.Is(err, ErrSourcePort) || !errors.Is(err, ErrRefused) {
		t.Errorf("service udp/5353: got %v, want ErrSourcePort", err)
	}
	if _, err := PlanNotrack(rs, Service("udp", 53), Target{}); err != nil {
		t.Errorf("service udp/53: %v", err)
	}
	// A firewall that accepts every packet on lo and filters no output:
	// nothing a local program sends from 5353 was dropped, so it is safe.
	open := strings.Replace(v4, "-A INPUT -m conntrack", "-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack", 1)
	if _, err := PlanNotrack(iptRuleset(t, BackendIptablesLegacy, open, ""), Service("udp", 5353), Target{}); err != nil {
		t.Errorf("service udp/5353 with loopback accepted: %v", err)
	}
}
