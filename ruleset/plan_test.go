package ruleset

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// iptRuleset builds a ruleset from iptables-save text (IPv4) and
// optionally ip6tables-save text, for one backend.
func iptRuleset(t *testing.T, b Backend, v4, v6 string) *Ruleset {
	t.Helper()
	rs := &Ruleset{Tools: DefaultTools(), Nftables: true}
	for _, s := range []struct {
		text string
		fam  Family
	}{{v4, "ip"}, {v6, "ip6"}} {
		if s.text == "" {
			continue
		}
		tables, err := ParseSave(strings.NewReader(s.text), b, s.fam)
		if err != nil {
			t.Fatal(err)
		}
		rs.Tables = append(rs.Tables, tables...)
	}
	return rs
}

func mustPlan(t *testing.T, rs *Ruleset, sel Selector) *Plan {
	t.Helper()
	p, err := PlanNotrack(rs, sel, Target{NetNS: "demo"})
	if err != nil {
		t.Fatalf("PlanNotrack(%s): %v", sel, err)
	}
	return p
}

func hasCommand(p *Plan, substr string) bool {
	for _, c := range p.Commands() {
		if strings.Contains(c, substr) {
			return true
		}
	}
	return false
}

// A chain jumped to that RETURNs sends the packets back: the stateful rule
// after the jump still sees them, so the accept goes before it (position
// 2), not nowhere. The firewall opens only tcp/80, so loopback is narrowed
// to it.
func TestPlanReturnGoesBackToTheCaller(t *testing.T) {
	rs := iptRuleset(t, BackendIptablesLegacy, `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:USER - [0:0]
-A INPUT -j USER
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp --dport 80 -m state --state NEW -j ACCEPT
-A USER -j RETURN
COMMIT
`, "")
	p := mustPlan(t, rs, Loopback())
	if !hasCommand(p, "iptables-legacy -w -I INPUT 2 -i lo -p tcp -m tcp --dport 80 -m conntrack --ctstate UNTRACKED") ||
		!hasCommand(p, "iptables-legacy -w -I INPUT 2 -i lo -p tcp -m tcp --sport 80 ! --syn -m conntrack --ctstate UNTRACKED") {
		t.Errorf("want the accept at INPUT position 2:\n%s", strings.Join(p.Commands(), "\n"))
	}
}

// A jumped-to chain whose stateful rule comes first: the accept goes
// before the jump.
func TestPlanStatefulInsideAJump(t *testing.T) {
	rs := iptRuleset(t, BackendIptablesNft, "", `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:before - [0:0]
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -j before
-A before -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A before -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`)
	p := mustPlan(t, rs, Loopback())
	if !hasCommand(p, "ip6tables-nft -w -I INPUT 2 -i lo -p tcp -m tcp --dport 22 -m conntrack --ctstate UNTRACKED") {
		t.Errorf("want the accept before the jump (position 2):\n%s", strings.Join(p.Commands(), "\n"))
	}
}

// ufw-style: loopback is accepted (statelessly) before any conntrack rule,
// so the filter needs nothing; the raw table already untracks IPv6
// loopback, so only IPv4 is missing and ctdoctor's nft table covers it.
func TestPlanUfwLoopbackAlreadyAccepted(t *testing.T) {
	tables := parseFile(t, "ip6tables-nft-save.ufw.txt", BackendIptablesNft, "ip6")
	rs := &Ruleset{Tables: tables, Tools: DefaultTools(), Nftables: true}
	p := mustPlan(t, rs, Loopback())
	if len(p.Steps) != 1 || p.Steps[0].Kind != StepNft || hasCommand(p, "insert rule") || hasCommand(p, "ip6tables") {
		t.Fatalf("want only the NOTRACK table:\n%s", strings.Join(p.Commands(), "\n"))
	}
}

// A port the firewall opens to some sources only: refused, because an
// accept of untracked packets would open it to all. An early stateless
// accept of loopback does not make an open port look restricted.
func TestPlanRestrictedPort(t *testing.T) {
	text := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.0.0.0/8 -p tcp --dport 5432 -m state --state NEW -j ACCEPT
-A INPUT -p tcp --dport 80 -m state --state NEW -j ACCEPT
-A INPUT -j REJECT
COMMIT
`
	rs := iptRuleset(t, BackendIptablesLegacy, text, "")
	_, err := PlanNotrack(rs, Service("tcp", 5432), Target{})
	var re *RefusedError
	if !errors.Is(err, ErrRestricted) || !errors.As(err, &re) {
		t.Fatalf("tcp/5432: got %v, want ErrRestricted", err)
	}
	p := mustPlan(t, rs, Service("tcp", 80))
	for _, want := range []string{
		"-I INPUT 1 -p tcp -m tcp --dport 80 -m addrtype --dst-type LOCAL -m conntrack --ctstate UNTRACKED",
		"fib daddr type local tcp dport 80 notrack",
		"output tcp sport 80 tcp flags & (syn | ack) != syn notrack",
		`output oif "lo" tcp dport 80 notrack`,
	} {
		if !hasCommand(p, want) {
			t.Errorf("tcp/80 plan lacks %q:\n%s", want, strings.Join(p.Commands(), "\n"))
		}
	}
	// Replies to local clients reach "-i lo -j ACCEPT", which does not
	// look at conntrack: they need no accept of their own.
	if hasCommand(p, "--sport 80 -m conntrack") {
		t.Errorf("tcp/80 plan accepts replies that -i lo already accepts:\n%s", strings.Join(p.Commands(), "\n"))
	}
	// A port the firewall does not open at all.
	if _, err := PlanNotrack(rs, Service("tcp", 9999), Target{}); !errors.Is(err, ErrRestricted) {
		t.Errorf("tcp/9999: got %v, want ErrRestricted", err)
	}
}

// Docker: published ports are DNATed from a chain reached from
// PREROUTING and OUTPUT; loopback connections to the host's own address
// go through that DNAT, so loopback must stay tracked. The masquerade of
// the containers' subnet is named only if nothing else refuses first.
func TestPlanDockerRefusesLoopback(t *testing.T) {
	tables := parseFile(t, "iptables-nft-save.docker.txt", BackendIptablesNft, "ip")
	rs := &Ruleset{Tables: tables, Tools: DefaultTools(), Nftables: true}
	_, err := PlanNotrack(rs, Loopback(), Target{})
	var re *RefusedError
	if !errors.Is(err, ErrNATed) || !errors.As(err, &re) {
		t.Fatalf("got %v, want ErrNATed", err)
	}
	if _, err := PlanNotrack(rs, Service("tcp", 8080), Target{}); !errors.Is(err, ErrNATed) {
		t.Errorf("tcp/8080 (published): got %v, want ErrNATed", err)
	}
}

// Idempotence and partial states, on an iptables ruleset whose raw table
// already untracks loopback for IPv4 and IPv6. The filter opens tcp/80.
func TestPlanAlreadyDone(t *testing.T) {
	filter := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
ACCEPT_RULE-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m state --state NEW -j ACCEPT
COMMIT
`
	raw := `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -i lo -j NOTRACK
-A OUTPUT -o lo -j CT --notrack
COMMIT
`
	accept := "-A INPUT -i lo -m conntrack --ctstate UNTRACKED -j ACCEPT\n"
	both := func(f, r string) *Ruleset { return iptRuleset(t, BackendIptablesLegacy, f+r, f+r) }

	if p := mustPlan(t, both(strings.Replace(filter, "ACCEPT_RULE", accept, 1), raw), Loopback()); !p.Empty() {
		t.Errorf("accept and NOTRACK present: want nothing to do, got\n%s", strings.Join(p.Commands(), "\n"))
	}
	// NOTRACK without the accept (the broken state): only the accept rules,
	// for the port the firewall opens (loopback to any other port was
	// dropped before the NOTRACK, and stays dropped).
	p := mustPlan(t, both(strings.Replace(filter, "ACCEPT_RULE", "", 1), raw), Loopback())
	if len(p.Steps) != 2 || hasCommand(p, "create table") || hasCommand(p, "-j NOTRACK") ||
		!hasCommand(p, "iptables-legacy -w -I INPUT 1 -i lo -p tcp -m tcp --dport 80 -m conntrack") ||
		!hasCommand(p, "ip6tables-legacy -w -I INPUT 1 -i lo -p tcp -m tcp --sport 80 ! --syn -m conntrack") ||
		hasCommand(p, "-I INPUT 1 -i lo -m conntrack") {
		t.Errorf("NOTRACK present, accept missing: want the accept only, for both families:\n%s", strings.Join(p.Commands(), "\n"))
	}
	// The accept without NOTRACK: only the NOTRACK table, for the open port
	// (untracking all of lo would let the accept open every port).
	p = mustPlan(t, both(strings.Replace(filter, "ACCEPT_RULE", accept, 1), ""), Loopback())
	if len(p.Steps) != 1 || p.Steps[0].Kind != StepNft || hasCommand(p, "insert rule") ||
		!hasCommand(p, `add rule inet ctdoctor_notrack_lo output oif "lo" tcp dport 80 notrack`) || hasCommand(p, `oif "lo" notrack`) {
		t.Errorf("accept present, NOTRACK missing: want the NOTRACK table only:\n%s", strings.Join(p.Commands(), "\n"))
	}
	// NOTRACK for IPv4 only: the nft table (inet) adds IPv6.
	p = mustPlan(t, iptRuleset(t, BackendIptablesLegacy, strings.Replace(filter, "ACCEPT_RULE", accept, 1)+raw, ""), Loopback())
	if !hasCommand(p, "create table inet ctdoctor_notrack_lo") {
		t.Errorf("IPv6 loopback is still tracked: want the NOTRACK table:\n%s", strings.Join(p.Commands(), "\n"))
	}
}

// nftRuleset is a native nft ruleset written as data: table inet fw with
// an input chain (policy drop) whose first rule matches ct state
// established,related, and whose second accepts new connections to tcp
// ports 80 and 8081 (nstest.DemoRuleset).
func nftRuleset(tableName, chainName string) *Ruleset {
	return &Ruleset{Tools: DefaultTools(), Nftables: true, Tables: []*Table{{
		Backend: BackendNft, Family: "inet", Name: tableName,
		Chains: []*Chain{{Name: chainName, Hook: HookInput, Type: "filter", Policy: "drop", Rules: []*Rule{
			{Handle: 4, Index: 1, Stateful: true, Verdict: "accept", Conds: []Cond{{Field: FieldCtState, Mask: CtEstablished | CtRelated}}},
			{Handle: 5, Index: 2, Stateful: true, Verdict: "accept", Conds: []Cond{
				{Field: FieldL4Proto, Values: []Range{{6, 6}}},
				{Field: FieldDPort, Values: []Range{{80, 80}, {8081, 8081}}},
				{Field: FieldCtState, Mask: CtNew}}},
		}}},
	}}}
}

func TestPlanNftBatch(t *testing.T) {
	p := mustPlan(t, nftRuleset("fw", "input"), Loopback())
	if len(p.Steps) != 1 {
		t.Fatalf("want one step, got %d", len(p.Steps))
	}
	// The chain opens only tcp/80 and tcp/8081: loopback is untracked to
	// and from them, and the accept takes only those untracked packets.
	want := `ip netns exec demo nft -f - <<'EOF'
insert rule inet fw input position 4 iif "lo" tcp dport 80 ct state untracked accept comment "ctdoctor notrack lo"
insert rule inet fw input position 4 iif "lo" tcp sport 80 tcp flags & (syn | ack) != syn ct state untracked accept comment "ctdoctor notrack lo"
insert rule inet fw input position 4 iif "lo" tcp dport 8081 ct state untracked accept comment "ctdoctor notrack lo"
insert rule inet fw input position 4 iif "lo" tcp sport 8081 tcp flags & (syn | ack) != syn ct state untracked accept comment "ctdoctor notrack lo"
create table inet ctdoctor_notrack_lo
add chain inet ctdoctor_notrack_lo prerouting { type filter hook prerouting priority -300; policy accept; }
add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp dport 80 notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp sport 80 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp dport 8081 notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo prerouting iif "lo" tcp sport 8081 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
add chain inet ctdoctor_notrack_lo output { type filter hook output priority -300; policy accept; }
add rule inet ctdoctor_notrack_lo output oif "lo" tcp dport 80 notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo output oif "lo" tcp sport 80 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo output oif "lo" tcp dport 8081 notrack comment "ctdoctor notrack lo"
add rule inet ctdoctor_notrack_lo output oif "lo" tcp sport 8081 tcp flags & (syn | ack) != syn notrack comment "ctdoctor notrack lo"
EOF`
	if got := p.Steps[0].Commands[0]; got != want {
		t.Errorf("batch:\n%s\nwant:\n%s", got, want)
	}
	wantUndo := `ip netns exec demo sh -c '{ nft -a list chain inet fw input | sed -n "s|.* comment \"ctdoctor notrack lo\" # handle \([0-9][0-9]*\)\$|delete rule inet fw input handle \1|p"; echo "delete table inet ctdoctor_notrack_lo"; } | nft -f -'`
	if got := p.UndoCommands(); len(got) != 1 || got[0] != wantUndo {
		t.Errorf("undo:\n%q\nwant:\n%q", got, wantUndo)
	}
	if c := p.Steps[0].Changes; len(c) != 5 || c[0].Action != "insert-rule" || c[0].BeforeHandle != 4 || c[4].Action != "add-table" {
		t.Errorf("changes: %+v", c)
	}
}

func TestPlanErrors(t *testing.T) {
	if _, err := PlanNotrack(nftRuleset("my fw", "input"), Loopback(), Target{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("table name with a space: got %v, want ErrUnsupported", err)
	}
	rs := nftRuleset("fw", "input")
	rs.Tools.Nft = ""
	if _, err := PlanNotrack(rs, Loopback(), Target{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("nft table without nft installed: got %v, want ErrUnsupported", err)
	}
	// ctdoctor's table, half there.
	rs = nftRuleset("fw", "input")
	rs.Tables = append(rs.Tables, &Table{Backend: BackendNft, Family: "inet", Name: "ctdoctor_notrack_lo", Chains: []*Chain{
		{Name: "output", Hook: HookOutput, Type: "filter", Priority: PriorityRaw, Policy: "accept",
			Rules: []*Rule{{Handle: 2, Index: 1, Notrack: true, Conds: []Cond{{Field: FieldOIF, Values: []Range{{1, 1}}}}}}}}})
	if _, err := PlanNotrack(rs, Loopback(), Target{}); !errors.Is(err, ErrConflict) {
		t.Errorf("half a ctdoctor table: got %v, want ErrConflict", err)
	}
	for _, sel := range []Selector{{}, {Loopback: true, Port: 80}, Service("icmp", 1), Service("tcp", 0)} {
		if _, err := PlanNotrack(nftRuleset("fw", "input"), sel, Target{}); err == nil {
			t.Errorf("selector %+v: want an error", sel)
		}
	}
	if _, err := PlanNotrack(nftRuleset("fw", "input"), Loopback(), Target{NetNS: "a/b"}); err == nil {
		t.Error("target a/b: want an error")
	}
	if _, err := PlanNotrack(nil, Loopback(), Target{}); err == nil {
		t.Error("nil ruleset: want an error")
	}
}

func TestTargetPrefix(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"", ""},
		{"demo", "ip netns exec demo "},
		{"/run/netns/demo", "ip netns exec demo "},
		{"/run/netns/../netns/demo", "ip netns exec demo "},
		{"1234", "nsenter --net=/proc/1234/ns/net -- "},
		{"/var/run/docker/netns/abc", "nsenter --net=/var/run/docker/netns/abc -- "},
		{"it's", `ip netns exec 'it'\''s' `},
	} {
		if got := (Target{NetNS: tc.spec}).Prefix(); got != tc.want {
			t.Errorf("Prefix(%q) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

// A ruleset survives JSON (as a snapshot could store it) and gives the
// same plan.
func TestRulesetJSONRoundTrip(t *testing.T) {
	rs := iptRuleset(t, BackendIptablesNft, rhelRules, "")
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var back Ruleset
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	p1, p2 := mustPlan(t, rs, Loopback()), mustPlan(t, &back, Loopback())
	if strings.Join(p1.Commands(), "\n") != strings.Join(p2.Commands(), "\n") {
		t.Errorf("plans differ after a JSON round trip")
	}
}

func TestWriteScript(t *testing.T) {
	p := mustPlan(t, nftRuleset("fw", "input"), Loopback())
	var b strings.Builder
	if err := WriteScript(&b, p); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{"#!/bin/sh\n", "set -eu\n", "# Step 1 (nft):", "# Why: ", p.Steps[0].Commands[0] + "\n", "# To undo"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(line, "#") && len(line) > 110 && !strings.HasPrefix(line, "#   ") {
			t.Errorf("comment line not wrapped: %q", line)
		}
	}
	empty := &Plan{Selector: Loopback()}
	b.Reset()
	_ = WriteScript(&b, empty)
	if !strings.Contains(b.String(), "Nothing to do") || strings.Contains(b.String(), "set -eu") {
		t.Errorf("empty plan script:\n%s", b.String())
	}
}

// A verdict map whose verdicts are unknown may jump into a chain that
// looks at conntrack: an accept would go before it. It may also drop any
// loopback packet, so the planner cannot tell which loopback ports are
// open, and refuses loopback rather than open them all.
func TestPlanUnknownVerdictMap(t *testing.T) {
	rs := nftRuleset("fw", "input")
	in := rs.Tables[0].Chains[0]
	vm := &Rule{Handle: 9, Verdict: "vmap", VMap: &VMap{Field: FieldIIFName, Unknown: true}}
	in.Rules = append([]*Rule{vm}, in.Rules...)
	for i, r := range in.Rules {
		r.Index = i + 1
	}
	k := spec{iifLo: true, proto: "tcp", dport: 80}.class(HookInput, "")
	if o, i := walk(rs.Tables[0], in, k); o != needsAccept || i != 0 {
		t.Errorf("walk: %v at %d, want needsAccept before the verdict map (index 0)", o, i)
	}
	if _, err := PlanNotrack(rs, Loopback(), Target{}); !errors.Is(err, ErrLoopbackClosed) {
		t.Errorf("loopback: got %v, want ErrLoopbackClosed", err)
	}
}

// A chain that drops nothing an untracked packet could meet (mangle with
// connmark rules, an output chain with policy accept) gets no accept: it
// would only make the packets skip its later rules (marks, logging).
func TestPlanNoAcceptWhereNothingDrops(t *testing.T) {
	rs := iptRuleset(t, BackendIptablesLegacy, `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -m connmark --mark 0x1 -j RETURN
-A PREROUTING -m conntrack --ctstate INVALID -j DROP
-A PREROUTING -j MARK --set-mark 0x2
-A OUTPUT -m state --state ESTABLISHED -j ACCEPT
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m state --state NEW -j ACCEPT
-A OUTPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
COMMIT
`, "")
	p := mustPlan(t, rs, Loopback())
	if hasCommand(p, "-t mangle") || hasCommand(p, "-I OUTPUT") || !hasCommand(p, "iptables-legacy -w -I INPUT 1 -i lo -p tcp -m tcp --dport 80") {
		t.Errorf("want an accept in filter INPUT only:\n%s", strings.Join(p.Commands(), "\n"))
	}
}

func TestReadBadTarget(t *testing.T) {
	for _, spec := range []string{"a/b", "..", "/etc/hostname"} {
		if _, err := Read(t.Context(), Target{NetNS: spec}); err == nil {
			t.Errorf("Read(%q): want an error", spec)
		}
	}
}

// Loopback under a firewall that does not accept every new loopback
// connection: NOTRACK of all of lo, with the accept of untracked loopback
// packets it needs, would open every loopback port. The plan is narrowed
// to the ports every chain accepts as new on lo; a firewall that accepts
// all of lo keeps the whole-lo plan; one that opens no port is refused.
func TestPlanLoopbackNarrowedToOpenPorts(t *testing.T) {
	// nstest.DemoRuleset: policy drop, new connections to tcp 80 and 8081.
	p := mustPlan(t, nftRuleset("fw", "input"), Loopback())
	for _, bad := range []string{`iif "lo" ct state untracked accept`, `iif "lo" notrack`, `oif "lo" notrack`, "9999"} {
		if hasCommand(p, bad) {
			t.Errorf("narrowed plan has %q:\n%s", bad, strings.Join(p.Commands(), "\n"))
		}
	}
	st := p.Steps[0]
	for _, want := range []string{"tcp/80, tcp/8081", "stays tracked"} {
		if !strings.Contains(st.What+st.Why, want) {
			t.Errorf("What/Why lack %q:\n%s\n%s", want, st.What, st.Why)
		}
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "only to and from tcp/80, tcp/8081") {
		t.Errorf("notes: %q", p.Notes)
	}

	// The same firewall with the ports opened to eth0 only, or not at all:
	// no port is open on lo.
	for name, rs := range map[string]*Ruleset{
		"eth0 only": func() *Ruleset {
			rs := nftRuleset("fw", "input")
			r := rs.Tables[0].Chains[0].Rules[1]
			r.Conds = append(r.Conds, Cond{Field: FieldIIFName, Names: []string{"eth0"}})
			return rs
		}(),
		"established only": func() *Ruleset {
			rs := nftRuleset("fw", "input")
			rs.Tables[0].Chains[0].Rules = rs.Tables[0].Chains[0].Rules[:1]
			return rs
		}(),
	} {
		_, err := PlanNotrack(rs, Loopback(), Target{})
		var re *RefusedError
		if !errors.Is(err, ErrLoopbackClosed) || !errors.Is(err, ErrRefused) || !errors.As(err, &re) {
			t.Errorf("%s: got %v, want ErrLoopbackClosed", name, err)
			continue
		}
		if re.Rule != "inet fw chain input, policy drop" || re.Detail == "" {
			t.Errorf("%s: refusal names %q: %s", name, re.Rule, re.Detail)
		}
	}

	// IPv4 opens 80 and 8081, IPv6 only 8081: only 8081 is open for both.
	v4 := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,8081 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
	v6 := strings.Replace(v4, "--dports 80,8081", "--dports 8081", 1)
	p = mustPlan(t, iptRuleset(t, BackendIptablesNft, v4, v6), Loopback())
	if !hasCommand(p, `oif "lo" tcp dport 8081 notrack`) || hasCommand(p, "dport 80 ") || hasCommand(p, "--dport 80 ") {
		t.Errorf("want tcp/8081 only:\n%s", strings.Join(p.Commands(), "\n"))
	}
	// An output chain that lets new loopback connections out to 8081 only.
	p = mustPlan(t, iptRuleset(t, BackendIptablesNft, strings.Replace(v4, ":OUTPUT ACCEPT [0:0]\n", ":OUTPUT DROP [0:0]\n-A OUTPUT -p tcp --dport 8081 -j ACCEPT\n-A OUTPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n", 1), ""), Loopback())
	if !hasCommand(p, `oif "lo" tcp dport 8081 notrack`) || hasCommand(p, "dport 80 ") || hasCommand(p, "--dport 80 ") {
		t.Errorf("output open to 8081 only: want tcp/8081 only:\n%s", strings.Join(p.Commands(), "\n"))
	}

	// Loopback accepted as a whole before any drop, or a policy accept with
	// nothing dropping: the whole-lo plan.
	for name, text := range map[string]string{
		"iif lo accept first": strings.Replace(v4, "-A INPUT -m conntrack", "-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack", 1),
		"policy accept":       strings.Replace(strings.Replace(v4, ":INPUT DROP", ":INPUT ACCEPT", 1), "-A INPUT -p tcp -m multiport --dports 80,8081 -m conntrack --ctstate NEW -j ACCEPT\n", "", 1),
	} {
		p := mustPlan(t, iptRuleset(t, BackendIptablesLegacy, text, ""), Loopback())
		if !hasCommand(p, `add rule inet ctdoctor_notrack_lo output oif "lo" notrack`) || hasCommand(p, "dport") {
			t.Errorf("%s: want the whole-lo NOTRACK:\n%s", name, strings.Join(p.Commands(), "\n"))
		}
	}
}
