package ruleset

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parseFile(t *testing.T, name string, b Backend, fam Family) []*Table {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tables, err := ParseSave(f, b, fam)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return tables
}

func tableOf(t *testing.T, tables []*Table, name string) *Table {
	t.Helper()
	for _, tb := range tables {
		if tb.Name == name {
			return tb
		}
	}
	t.Fatalf("no table %s", name)
	return nil
}

func cond(r *Rule, f Field) *Cond {
	for i := range r.Conds {
		if r.Conds[i].Field == f {
			return &r.Conds[i]
		}
	}
	return nil
}

// The fixtures are what iptables-legacy-save -c, iptables-nft-save and
// ip6tables-nft-save printed for rules loaded with *-restore; the
// expectations come from the rules as written.
func TestParseSaveRHEL(t *testing.T) {
	tables := parseFile(t, "iptables-legacy-save.rhel.txt", BackendIptablesLegacy, "ip")
	if len(tables) != 1 {
		t.Fatalf("%d tables, want 1", len(tables))
	}
	filter := tableOf(t, tables, "filter")
	in := filter.Chain("INPUT")
	if in == nil || in.Hook != HookInput || in.Policy != "accept" || in.Type != "filter" || in.Priority != 0 || len(in.Rules) != 6 {
		t.Fatalf("INPUT: %+v", in)
	}
	r := in.Rules
	if c := cond(r[0], FieldCtState); !r[0].Stateful || c == nil || c.Mask != CtEstablished|CtRelated || c.Neg || r[0].Verdict != "accept" {
		t.Errorf("rule 1 (state RELATED,ESTABLISHED): %+v", r[0])
	}
	if c := cond(r[2], FieldIIFName); c == nil || !reflect.DeepEqual(c.Names, []string{"lo"}) || r[2].Stateful {
		t.Errorf("rule 3 (-i lo): %+v", r[2])
	}
	for _, i := range []int{3, 4} {
		p, d, s := cond(r[i], FieldL4Proto), cond(r[i], FieldDPort), cond(r[i], FieldCtState)
		if p == nil || p.Values[0] != (Range{6, 6}) || d == nil || s == nil || s.Mask != CtNew || !r[i].Stateful {
			t.Errorf("rule %d (tcp NEW): %+v", i+1, r[i])
		}
	}
	if d := cond(r[3], FieldDPort); d.Values[0] != (Range{22, 22}) {
		t.Errorf("rule 4 port: %+v", d)
	}
	if r[5].Verdict != "reject" || r[5].Index != 6 {
		t.Errorf("rule 6: %+v", r[5])
	}
}

func TestParseSaveDocker(t *testing.T) {
	tables := parseFile(t, "iptables-nft-save.docker.txt", BackendIptablesNft, "ip")
	nat := tableOf(t, tables, "nat")
	if c := nat.Chain("POSTROUTING"); c.Type != "nat" || c.Priority != 100 || c.Rules[0].NAT != "masquerade" {
		t.Errorf("POSTROUTING: %+v %+v", c, c.Rules[0])
	}
	if c := nat.Chain("PREROUTING"); c.Priority != -100 || c.Rules[0].Verdict != "jump" || c.Rules[0].Target != "DOCKER" {
		t.Errorf("PREROUTING: %+v", c.Rules[0])
	}
	out := nat.Chain("OUTPUT").Rules[0]
	if c := cond(out, FieldDaddrType); c == nil || c.Values[0] != (Range{rtnLocal, rtnLocal}) {
		t.Errorf("OUTPUT addrtype: %+v", out)
	}
	if c := cond(out, FieldOther); c == nil || !c.Neg || c.Text != "daddr 127.0.0.0/8" {
		t.Errorf("OUTPUT ! -d: %+v", out)
	}
	dnat := nat.Chain("DOCKER").Rules[1]
	if c := cond(dnat, FieldIIFName); dnat.NAT != "dnat" || c == nil || !c.Neg || c.Names[0] != "docker0" {
		t.Errorf("DOCKER DNAT: %+v", dnat)
	}
	if dnat.Verdict != "" {
		t.Errorf("DNAT's options were taken for a verdict: %+v", dnat)
	}
	filter := tableOf(t, tables, "filter")
	if c := filter.Chain("FORWARD"); c.Policy != "drop" || c.Rules[0].Target != "DOCKER-USER" {
		t.Errorf("FORWARD: %+v", c)
	}
	if filter.Chain("DOCKER").Base() {
		t.Error("a user chain is not a base chain")
	}
}

func TestParseSaveUfw6(t *testing.T) {
	tables := parseFile(t, "ip6tables-nft-save.ufw.txt", BackendIptablesNft, "ip6")
	raw := tableOf(t, tables, "raw")
	if c := raw.Chain("PREROUTING"); c.Priority != PriorityRaw || !c.Rules[0].Notrack || !raw.Chain("OUTPUT").Rules[0].Notrack {
		t.Errorf("raw: CT --notrack and NOTRACK should both be notrack: %+v", c.Rules[0])
	}
	user := tableOf(t, tables, "filter").Chain("ufw6-user-input")
	web := user.Rules[0]
	if d := cond(web, FieldDPort); d == nil || !reflect.DeepEqual(d.Values, []Range{{80, 80}, {443, 443}, {8000, 8100}}) {
		t.Errorf("multiport: %+v", web)
	}
	if web.Comment != `web "front" ports` {
		t.Errorf("comment %q", web.Comment)
	}
	logr := user.Rules[1]
	if d := cond(logr, FieldDPort); d == nil || !d.Neg || logr.Verdict != "" {
		t.Errorf("! --dport 53 ... -j LOG: %+v", logr)
	}
	if p := cond(tableOf(t, tables, "filter").Chain("ufw6-before-input").Rules[3], FieldL4Proto); p == nil || p.Values[0] != (Range{58, 58}) {
		t.Errorf("-p ipv6-icmp: %+v", p)
	}
}

func TestParseSaveErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"truncated", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", "no COMMIT"},
		{"rule outside a table", "-A INPUT -j ACCEPT\n", "line 1: rule outside a table"},
		{"undeclared chain", "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", "line 2: rule for chain INPUT, which is not declared"},
		{"bad policy", "*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n", `bad policy "MAYBE"`},
		{"policy on a user chain", "*filter\n:MINE DROP [0:0]\nCOMMIT\n", "not a built-in chain"},
		{"unterminated quote", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"x -j ACCEPT\nCOMMIT\n", "line 3: unterminated quote"},
		{"bad port", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport http -j ACCEPT\nCOMMIT\n", "service names are not resolved"},
		{"reversed range", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 90:80 -j ACCEPT\nCOMMIT\n", "reversed"},
		{"duplicate table", "*filter\nCOMMIT\n*filter\nCOMMIT\n", "appears twice"},
		{"duplicate chain", "*filter\n:INPUT ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "declared twice"},
		{"nested table", "*filter\n*nat\nCOMMIT\n", "before table filter's COMMIT"},
		{"garbage", "*filter\nhello\nCOMMIT\n", "not a table, chain, rule or COMMIT line"},
		{"dangling !", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT !\nCOMMIT\n", `"!" at the end`},
		{"long line", "*filter\n" + strings.Repeat("x", maxSaveLine+1) + "\n", "line 2: longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSave(strings.NewReader(tc.text), BackendIptablesLegacy, "ip")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := ParseSave(strings.NewReader(""), BackendIptablesLegacy, "inet"); err == nil {
		t.Error("family inet: want an error")
	}
	if tables, err := ParseSave(strings.NewReader("# nothing\n\n"), BackendIptablesLegacy, "ip"); err != nil || len(tables) != 0 {
		t.Errorf("empty save: %v %v", tables, err)
	}
}

func TestSplitSaveArgs(t *testing.T) {
	got, err := splitSaveArgs(`-A INPUT -m comment --comment "a \"b\" c\\d" -j ACCEPT`)
	want := []string{"-A", "INPUT", "-m", "comment", "--comment", `a "b" c\d`, "-j", "ACCEPT"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q %v, want %q", got, err, want)
	}
}

// FuzzParseSave: any text either parses or gives an error with a line
// number or a reason; what parses is consistent (indexes, hooks), and the
// planner neither panics nor plans into a table that has a NAT rule for
// the traffic.
func FuzzParseSave(f *testing.F) {
	for _, name := range []string{"iptables-legacy-save.rhel.txt", "iptables-nft-save.docker.txt", "ip6tables-nft-save.ufw.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, text string) {
		tables, err := ParseSave(strings.NewReader(text), BackendIptablesLegacy, "ip")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "iptables-save text") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		for _, tb := range tables {
			for _, c := range tb.Chains {
				if c.Base() != (c.Policy != "") {
					t.Fatalf("chain %s: hook %q policy %q", c.Name, c.Hook, c.Policy)
				}
				for i, r := range c.Rules {
					if r.Index != i+1 {
						t.Fatalf("chain %s rule %d has index %d", c.Name, i+1, r.Index)
					}
				}
			}
		}
		rs := &Ruleset{Tables: tables, Tools: DefaultTools(), Nftables: true}
		for _, sel := range []Selector{Loopback(), Service("tcp", 80)} {
			p, err := PlanNotrack(rs, sel, Target{NetNS: "fuzz"})
			if err != nil {
				var re *RefusedError
				if !errors.As(err, &re) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("plan: unexpected error %v", err)
				}
				continue
			}
			for _, c := range append(p.Commands(), p.UndoCommands()...) {
				if !strings.HasPrefix(c, "ip netns exec fuzz ") {
					t.Fatalf("command without the namespace prefix: %s", c)
				}
			}
		}
	})
}

// Negation written before the option (iptables ≥ 1.4.3) and after it (older
// iptables-save: "--dport ! 80"); open-ended port ranges.
func TestParseSaveNegationAndRanges(t *testing.T) {
	tables, err := ParseSave(strings.NewReader(`*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport ! 80 -j DROP
-A INPUT ! -i lo -m conntrack ! --ctstate NEW,UNTRACKED -j ACCEPT
-A INPUT -p udp -m udp --sport 53: -j ACCEPT
-A INPUT -p tcp -m tcp --dport :1023 -m addrtype ! --dst-type LOCAL -j DROP
-A INPUT -i ! lo -p ! udp -j DROP
COMMIT
`), BackendIptablesLegacy, "ip")
	if err != nil {
		t.Fatal(err)
	}
	r := tables[0].Chain("INPUT").Rules
	if c := cond(r[0], FieldDPort); c == nil || !c.Neg || c.Values[0] != (Range{80, 80}) {
		t.Errorf("--dport ! 80: %+v", c)
	}
	if i, s := cond(r[1], FieldIIFName), cond(r[1], FieldCtState); !i.Neg || !s.Neg || s.Mask != CtNew|CtUntracked {
		t.Errorf("! -i lo ! --ctstate NEW,UNTRACKED: %+v %+v", i, s)
	}
	if c := cond(r[2], FieldSPort); c.Values[0] != (Range{53, 65535}) {
		t.Errorf("--sport 53: %+v", c)
	}
	if p, a := cond(r[3], FieldDPort), cond(r[3], FieldDaddrType); p.Values[0] != (Range{0, 1023}) || !a.Neg {
		t.Errorf("--dport :1023 ! --dst-type LOCAL: %+v %+v", p, a)
	}
	if i, p := cond(r[4], FieldIIFName), cond(r[4], FieldL4Proto); i == nil || !i.Neg || i.Names[0] != "lo" || p == nil || !p.Neg || p.Values[0] != (Range{17, 17}) {
		t.Errorf("-i ! lo -p ! udp: %+v", r[4])
	}
	// Untracked loopback packets: rule 2 does not match them (! -i lo),
	// rule 4 does not either (their destination is local).
	k := spec{iifLo: true}.class(HookInput, "")
	if r[1].matches(k, false) != no || r[3].matches(k, false) != no {
		t.Errorf("evaluation: %v %v", r[1].matches(k, false), r[3].matches(k, false))
	}
}
