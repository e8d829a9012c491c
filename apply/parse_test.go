package apply

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/tune"
)

// echoOutput is what `nft --echo --handle -f -` printed on this machine
// (nftables 1.0.6, Linux 6.18) for a batch that inserts into an existing
// chain, creates a table with a base chain and a rule, and a set with
// elements in the existing table.
const echoOutput = `add table inet ctdoctor_raw # handle 2
add chain inet ctdoctor_raw prerouting { type filter hook prerouting priority raw; policy accept; } # handle 1
add rule inet ctdoctor_raw prerouting iif "lo" notrack # handle 2
insert rule inet fw input ct state untracked accept # handle 5
add chain inet fw extra # handle 6
add set inet fw ports { # handle 7 type inet_service; } 
add element inet fw ports { 80 }
add rule inet fw input tcp dport 1 accept comment "x # handle 99" # handle 8
# new generation 3 by process 19236 (nft)
`

func TestParseEcho(t *testing.T) {
	objs, complete, err := parseEcho([]byte(echoOutput))
	if err != nil || !complete {
		t.Fatalf("parseEcho: complete %v, %v", complete, err)
	}
	want := []NftObject{
		{Kind: "table", Family: "inet", Table: "ctdoctor_raw", Handle: 2},
		{Kind: "chain", Family: "inet", Table: "ctdoctor_raw", Name: "prerouting", Handle: 1},
		{Kind: "rule", Family: "inet", Table: "ctdoctor_raw", Chain: "prerouting", Handle: 2},
		{Kind: "rule", Family: "inet", Table: "fw", Chain: "input", Handle: 5},
		{Kind: "chain", Family: "inet", Table: "fw", Name: "extra", Handle: 6},
		{Kind: "set", Family: "inet", Table: "fw", Name: "ports", Handle: 7},
		{Kind: "element", Family: "inet", Table: "fw", Name: "ports"},
		{Kind: "rule", Family: "inet", Table: "fw", Chain: "input", Handle: 8},
	}
	if len(objs) != len(want) {
		t.Fatalf("got %d objects, want %d: %+v", len(objs), len(want), objs)
	}
	for i := range want {
		objs[i].Text = ""
		if objs[i] != want[i] {
			t.Errorf("object %d = %+v, want %+v", i, objs[i], want[i])
		}
	}
	// without the generation line nft did not finish
	if _, complete, _ := parseEcho([]byte(strings.Split(echoOutput, "# new")[0])); complete {
		t.Error("output without the generation line counted as complete")
	}
	// create, and an insert at a position (nft echoes "handle 2" in the
	// command; the object's own handle is the last one)
	objs, _, err = parseEcho([]byte("insert rule inet fw input handle 2 ct state untracked accept comment \"ctdoctor: untracked\" # handle 15\ncreate table inet ctd2 # handle 12\n"))
	if err != nil || len(objs) != 2 || objs[0].Handle != 15 || objs[0].Chain != "input" || objs[1].Kind != "table" || objs[1].Handle != 12 {
		t.Errorf("insert at a position, create table: %+v %v", objs, err)
	}
	if _, _, err := parseEcho([]byte("flush ruleset\n")); err == nil {
		t.Error("a line that is not an add was accepted")
	}
	if _, _, err := parseEcho([]byte("add rule inet fw input accept\n")); err == nil {
		t.Error("a rule without a handle was accepted")
	}
}

// rulesetJSON is `nft -j list ruleset` after the batch of echoOutput
// (trimmed to the fields read), plus a rule the operator added to
// ctdoctor's chain afterwards.
const rulesetJSON = `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"table": {"family": "inet", "name": "fw", "handle": 1}},
{"set": {"family": "inet", "name": "ports", "table": "fw", "type": "inet_service", "handle": 7, "elem": [80]}},
{"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 1}},
{"chain": {"family": "inet", "table": "fw", "name": "extra", "handle": 6}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 5, "expr": []}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 2, "expr": []}},
{"table": {"family": "inet", "name": "ctdoctor_raw", "handle": 2}},
{"chain": {"family": "inet", "table": "ctdoctor_raw", "name": "prerouting", "handle": 1}},
{"rule": {"family": "inet", "table": "ctdoctor_raw", "chain": "prerouting", "handle": 2, "expr": []}},
{"rule": {"family": "inet", "table": "ctdoctor_raw", "chain": "prerouting", "handle": 3, "expr": []}}]}`

func TestUndoScript(t *testing.T) {
	objs, _, err := parseEcho([]byte(echoOutput))
	if err != nil {
		t.Fatal(err)
	}
	objs = objs[:7] // the commented rule (handle 8) is gone from the listing
	before := &ruleset{tables: map[string]uint64{"inet fw": 1}}
	setTableHandles(objs, before)
	now, err := parseRuleset([]byte(rulesetJSON))
	if err != nil {
		t.Fatal(err)
	}
	script, gone := undoScript(objs, now)
	// the element went into a set the batch created: deleting the set covers it
	want := `delete set inet fw handle 7
delete chain inet fw handle 6
delete rule inet fw input handle 5
delete rule inet ctdoctor_raw prerouting handle 2
delete chain inet ctdoctor_raw handle 1
delete table inet handle 2
`
	if script != want {
		t.Errorf("undo script:\n%s\nwant\n%s", script, want)
	}
	if len(gone) != 0 {
		t.Errorf("gone %v", gone)
	}
	// an element added to a set that was there before is deleted by value
	if s, _ := undoScript(objs[6:7], now); s != "delete element inet fw ports { 80 }\n" {
		t.Errorf("element into an existing set: %q", s)
	}
	// the operator's rule 3 in ctdoctor's chain blocks the undo
	if f := foreign(objs, now); !reflect.DeepEqual(f, []string{"rule in inet ctdoctor_raw prerouting (handle 3)"}) {
		t.Errorf("foreign = %q", f)
	}
	// a table re-created since (another handle): its rule 2 is not ours
	objs2 := append([]NftObject(nil), objs...)
	for i := range objs2 {
		if objs2[i].Table == "ctdoctor_raw" {
			objs2[i].TableHandle = 9
			if objs2[i].Kind == "table" {
				objs2[i].Handle = 9
			}
		}
	}
	script, gone = undoScript(objs2, now)
	if strings.Contains(script, "ctdoctor_raw") || len(gone) != 3 {
		t.Errorf("objects of a table re-created since were deleted:\n%s(gone %v)", script, gone)
	}
}

func TestIptCheckArgv(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"iptables -I INPUT 1 -m conntrack --ctstate UNTRACKED -j ACCEPT", "iptables -C INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT"},
		{"iptables -t raw -A PREROUTING -i lo -j NOTRACK", "iptables -t raw -C PREROUTING -i lo -j NOTRACK"},
		{"ip6tables --insert INPUT -j ACCEPT", "ip6tables -C INPUT -j ACCEPT"},
		{"iptables -N CTDOCTOR", ""},
	} {
		got := strings.Join(iptCheckArgv(strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("iptCheckArgv(%s) = %q, want %q", c.in, got, c.want)
		}
	}
}

// validPlan is a plan with one action of each kind.
func validPlan() *tune.Plan {
	return &tune.Plan{Schema: tune.PlanSchema, ID: "p", CreatedAt: time.Unix(0, 0).UTC(),
		Host: tune.PlanHost{Hostname: "h", NetNS: "web1"}, Global: true,
		Steps: []tune.Step{
			{Title: "t", Scope: tune.ScopeNetNS, Actions: []tune.Action{
				{Kind: tune.KindSysctl, Path: "/proc/sys/net/netfilter/nf_conntrack_udp_timeout", Expect: "30", Value: "10"},
				{Kind: tune.KindNft, Script: "add table inet ctdoctor_raw\n"},
				{Kind: tune.KindIptables, Argv: []string{"iptables", "-A", "INPUT", "-j", "ACCEPT"}, UndoArgv: []string{"iptables", "-D", "INPUT", "-j", "ACCEPT"}},
			}},
			{Title: "g", Scope: tune.ScopeGlobal, Actions: []tune.Action{
				{Kind: tune.KindModuleParam, Path: "/sys/module/nf_conntrack/parameters/hashsize", Expect: "1", Value: "2"},
				{Kind: tune.KindFile, Path: "/etc/sysctl.d/90-x.conf", ExpectAbsent: true, Value: "x\n"},
			}},
		}}
}

func TestValidate(t *testing.T) {
	if err := Validate(validPlan()); err != nil {
		t.Fatalf("valid plan: %v", err)
	}
	for _, c := range []struct {
		name, want string
		edit       func(p *tune.Plan)
	}{
		{"schema", `schema "ctdoctor.plan/v0"`, func(p *tune.Plan) { p.Schema = "ctdoctor.plan/v0" }},
		{"no schema", "no schema field", func(p *tune.Plan) { p.Schema = "" }},
		{"no hostname", "host.hostname is empty", func(p *tune.Plan) { p.Host.Hostname = "" }},
		{"global step, not a global plan", "made without global steps", func(p *tune.Plan) { p.Global = false }},
		{"bad scope", `scope "host"`, func(p *tune.Plan) { p.Steps[0].Scope = "host" }},
		{"no expect", "no expect", func(p *tune.Plan) { p.Steps[0].Actions[0].Expect = "" }},
		{"value with newline", "spans lines", func(p *tune.Plan) { p.Steps[0].Actions[0].Value = "1\n2" }},
		{"sysctl outside /proc/sys", "not under /proc/sys", func(p *tune.Plan) { p.Steps[0].Actions[0].Path = "/etc/passwd" }},
		{"unclean path", "not a clean absolute path", func(p *tune.Plan) { p.Steps[0].Actions[0].Path = "/proc/sys/net/../kernel/x" }},
		{"global sysctl in a netns step", "not a per-namespace setting", func(p *tune.Plan) {
			p.Steps[0].Actions[0].Path = "/proc/sys/kernel/pid_max"
		}},
		{"nft flush", `"flush ruleset" removes or replaces`, func(p *tune.Plan) { p.Steps[0].Actions[1].Script = "flush ruleset\nadd table inet x\n" }},
		{"nft delete after ;", "removes or replaces", func(p *tune.Plan) { p.Steps[0].Actions[1].Script = "add table inet x; delete table inet fw\n" }},
		{"nft include", "removes or replaces", func(p *tune.Plan) { p.Steps[0].Actions[1].Script = `include "/etc/x.nft"` }},
		{"nft in a global step", "must have scope netns", func(p *tune.Plan) {
			p.Steps[1].Actions = append(p.Steps[1].Actions, tune.Action{Kind: tune.KindNft, Script: "add table ip x\n"})
		}},
		{"iptables without undo", "undo_argv are both required", func(p *tune.Plan) { p.Steps[0].Actions[2].UndoArgv = nil }},
		{"iptables runs a shell", `"sh" is not an iptables command`, func(p *tune.Plan) { p.Steps[0].Actions[2].Argv[0] = "sh" }},
		{"module parameter path", "not /sys/module/MODULE/parameters/NAME", func(p *tune.Plan) { p.Steps[1].Actions[0].Path = "/sys/kernel/x" }},
		{"file under /proc", "not a file apply writes", func(p *tune.Plan) { p.Steps[1].Actions[1].Path = "/proc/sys/x" }},
		{"remove and value", "remove and value", func(p *tune.Plan) { p.Steps[1].Actions[1].Remove = true; p.Steps[1].Actions[1].ExpectAbsent = false }},
		{"mode", "not a permission mode", func(p *tune.Plan) { p.Steps[1].Actions[1].Mode = 0o100644 }},
		{"two actions, one path", "one action per path", func(p *tune.Plan) {
			p.Steps[1].Actions = append(p.Steps[1].Actions, p.Steps[1].Actions[1])
		}},
		{"unknown kind", `unknown kind "kube-proxy"`, func(p *tune.Plan) { p.Steps[1].Actions[1].Kind = "kube-proxy" }},
		{"no actions", "has no actions", func(p *tune.Plan) { p.Steps[1].Actions = nil }},
	} {
		p := validPlan()
		c.edit(p)
		err := Validate(p)
		if !errors.Is(err, ErrBadPlan) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadPlan saying %q", c.name, err, c.want)
		}
	}
}

func TestReadPlanErrors(t *testing.T) {
	good, _ := json.Marshal(validPlan())
	if _, err := ReadPlan(strings.NewReader(string(good))); err != nil {
		t.Fatalf("a valid plan: %v", err)
	}
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", "empty file"},
		{"truncated", string(good[:len(good)/2]), "truncated"},
		{"truncated at the end", string(good[:len(good)-1]), "truncated"},
		{"not JSON", "schema: ctdoctor.plan/v1\n", "not valid JSON at line 1"},
		{"syntax error on line 3", "{\n\"schema\": \"ctdoctor.plan/v1\",\n\"id\": ,\n}", "line 3"},
		{"extra data", string(good) + "{}", "extra data"},
		{"wrong type", `{"schema":"ctdoctor.plan/v1","steps":"x"}`, `field "steps"`},
		{"a report, not a plan", `{"schema":"ctdoctor.report/v1"}`, `schema "ctdoctor.report/v1"`},
	} {
		_, err := ReadPlan(strings.NewReader(c.in))
		if !errors.Is(err, ErrBadPlan) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadPlan saying %q", c.name, err, c.want)
		}
	}
}

func TestWriteLineDiff(t *testing.T) {
	var b strings.Builder
	writeLineDiff(&b, "a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nD\ne\nf\ng\nh\n")
	want := `        …
        b
        c
      - d
      + D
        e
        f
        g
      + h
`
	if b.String() != want {
		t.Errorf("diff:\n%s\nwant\n%s", b.String(), want)
	}
}

func TestDecodeJournal(t *testing.T) {
	p := validPlan()
	j := Journal{Schema: JournalSchema, ID: "x", State: StateApplied, Plan: p,
		Actions: []ActionRecord{{Step: 0, Action: 0, Kind: tune.KindSysctl, Status: ActDone, Prev: &Prev{Value: "30\n"}}}}
	good, _ := json.Marshal(j)
	if _, err := decodeJournal(good); err != nil {
		t.Fatalf("a valid journal: %v", err)
	}
	bad := func(edit func(j *Journal)) []byte {
		c := j
		c.Actions = append([]ActionRecord(nil), j.Actions...)
		edit(&c)
		b, _ := json.Marshal(c)
		return b
	}
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"truncated", good[:len(good)-10], "truncated"},
		{"empty", nil, "empty file"},
		{"schema", bad(func(j *Journal) { j.Schema = "other" }), "schema"},
		{"state", bad(func(j *Journal) { j.State = "done" }), `unknown state "done"`},
		{"no plan", bad(func(j *Journal) { j.Plan = nil }), "no plan"},
		{"action outside the plan", bad(func(j *Journal) { j.Actions[0].Step = 5 }), "not in the plan"},
		{"status", bad(func(j *Journal) { j.Actions[0].Status = "maybe" }), `unknown status "maybe"`},
		{"done without a previous value", bad(func(j *Journal) { j.Actions[0].Prev = nil }), "no recorded previous value"},
	} {
		if _, err := decodeJournal(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// The parsers of untrusted input never panic, and accept only what they
// can use.
func FuzzReadPlan(f *testing.F) {
	good, _ := json.Marshal(validPlan())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"schema":"ctdoctor.plan/v1","id":"x","host":{"hostname":"h"},"steps":[{"title":"t","scope":"netns","actions":[{"kind":"nft","script":"flush ruleset"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPlan(strings.NewReader(string(b)))
		if err != nil {
			if !errors.Is(err, ErrBadPlan) {
				t.Fatalf("error does not wrap ErrBadPlan: %v", err)
			}
			return
		}
		if err := Validate(p); err != nil {
			t.Fatalf("ReadPlan accepted a plan Validate refuses: %v", err)
		}
		for _, s := range p.Steps {
			for _, a := range s.Actions {
				if a.Kind == tune.KindNft && checkNftScript(a.Script) != nil {
					t.Fatal("accepted an nft script that removes rules")
				}
			}
		}
	})
}

func FuzzParseEcho(f *testing.F) {
	f.Add([]byte(echoOutput))
	f.Add([]byte("add ct helper inet fw h { type \"ftp\" protocol tcp; } # handle 4\n"))
	f.Add([]byte("add table x # handle 1\n"))
	f.Add([]byte("insert rule inet fw input handle 2 ct state untracked accept comment \"ctdoctor: untracked\" # handle 15\ncreate table inet ctd2 # handle 12\n# new generation 11 by process 14660 (nft)\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, _, err := parseEcho(b)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Kind != "element" && o.Handle == 0 && !strings.Contains(o.Text, "# handle 0") {
				t.Fatalf("object without a handle accepted: %+v", o)
			}
			if o.Table == "" {
				t.Fatalf("object without a table: %+v", o)
			}
		}
		rs, _ := parseRuleset([]byte(rulesetJSON))
		_, _ = undoScript(objs, rs)
		_ = foreign(objs, rs)
	})
}

func FuzzDecodeJournal(f *testing.F) {
	j := Journal{Schema: JournalSchema, ID: "x", State: StateApplied, Plan: validPlan(),
		Actions: []ActionRecord{{Step: 0, Action: 0, Kind: tune.KindSysctl, Status: ActDone, Prev: &Prev{Value: "30\n"}},
			{Step: 0, Action: 1, Kind: tune.KindNft, Status: ActStarted, Nft: &NftRecord{EchoFile: "/x"}}}}
	good, _ := json.Marshal(j)
	f.Add(good)
	f.Add(good[:len(good)/3])
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := decodeJournal(b)
		if err != nil {
			return
		}
		// every action an undo looks at points into the plan and has what
		// undo reads
		for _, i := range undoable(j) {
			r := j.Actions[i]
			_ = j.Plan.Steps[r.Step].Actions[r.Action]
			if r.Kind == tune.KindNft && r.Nft == nil {
				t.Fatal("nft action without its record")
			}
		}
		_ = progress(j)
	})
}

func FuzzParseRuleset(f *testing.F) {
	f.Add([]byte(rulesetJSON))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := parseRuleset(b)
		if err != nil {
			return
		}
		objs, _, _ := parseEcho([]byte(echoOutput))
		_, _ = undoScript(objs, rs)
		_ = foreign(objs, rs)
		_, _ = newSince(b, b)
	})
}

func TestSystemdRunArgv(t *testing.T) {
	got := strings.Join(systemdRunArgv("ctdoctor-revert-X", "X", "/usr/bin/ctdoctor", WatchdogArgs("/var/lib/ctdoctor", "X"), []string{"A=1"}), " ")
	want := "systemd-run --unit ctdoctor-revert-X --description ctdoctor: revert apply X unless confirmed --collect --quiet --property Type=exec --setenv A=1 /usr/bin/ctdoctor rollback --watchdog --state-dir /var/lib/ctdoctor X"
	if got != want {
		t.Errorf("argv\n%s\nwant\n%s", got, want)
	}
}

func TestDiffNamesGlobalStepsLeftOut(t *testing.T) {
	p := validPlan()
	p.GlobalSteps, p.Steps = p.Steps[1:], p.Steps[:1]
	c := &Checked{Plan: p, t: &target{name: "netns web1 [1]", live: true}}
	var b strings.Builder
	c.WriteDiff(&b)
	if !strings.Contains(b.String(), "(1 step for the whole host is listed apart in the plan and not applied") {
		t.Errorf("diff:\n%s", b.String())
	}
}
