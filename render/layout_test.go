package render

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/host"
)

var testWidths = []int{80, 100, 120}

// fixtureReport diagnoses one of the fixture hosts under host/testdata/hosts.
func fixtureReport(t *testing.T, name string) *analyze.Report {
	t.Helper()
	r, err := doctor.Diagnose(context.Background(), doctor.Input{Root: "../host/testdata/hosts/" + name}, doctor.Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// longWord is one shell word (a quoted string) too wide for any test width.
var longWord = "'" + strings.Repeat("net.netfilter.nf_conntrack_", 5) + "x = 1'"

// longReport has what is hard to lay out: a long host line and verdict,
// IPv6 addresses in the breakdown, long namespace names and errors,
// evidence with lists of objects, long fix commands with comments, a
// command with a word wider than any line, and a fix that is not shell.
func longReport(t *testing.T) *analyze.Report {
	t.Helper()
	var listing strings.Builder
	for i := range 40 {
		fmt.Fprintf(&listing, "ipv6     10 tcp      6 431999 ESTABLISHED src=2001:db8:85a3:1234:5678:8a2e:%x:7334 dst=2001:db8:ffff:ffff:ffff:ffff:ffff:%x sport=%d dport=443 src=2001:db8:ffff:ffff:ffff:ffff:ffff:%x dst=2001:db8:85a3:1234:5678:8a2e:%x:7334 sport=443 dport=%d [ASSURED] mark=7 zone=3 use=1\n",
			i%12, i%5, 40000+i, i%5, i%12, 40000+i)
		fmt.Fprintf(&listing, "udp      17 29 src=10.0.0.%d dst=10.96.0.10 sport=%d dport=53 [UNREPLIED] src=10.96.0.10 dst=10.0.0.%d sport=53 dport=%d mark=0 use=1\n",
			i%7, 30000+i, i%7, 30000+i)
	}
	acc := analyze.NewAccumulator()
	if err := conntrack.ReadAll(strings.NewReader(listing.String()))(func(f *conntrack.Flow) error { acc.Add(f); return nil }); err != nil {
		t.Fatal(err)
	}
	bd := acc.Breakdown()
	if bd.Total != 80 {
		t.Fatalf("the listing gave %d entries, want 80", bd.Total)
	}
	now := time.Date(2026, 11, 20, 14, 3, 0, 0, time.UTC)
	return &analyze.Report{Schema: analyze.Schema, GeneratedAt: now,
		Verdict: analyze.Verdict{Level: analyze.Healthy, Reason: "table 31% full (80 of 262144), no drops; the kernel log holds 31 \"table full\" events of other network namespaces — run ctdoctor --all-netns on the host to check them"},
		Host: analyze.HostInfo{Hostname: "build-agent-07.eu-central-1.compute.internal", Kernel: "6.8.0-1021-aws-with-a-long-suffix",
			NetNS: "ci-runner-namespace-with-a-rather-long-name", NetNSInode: 4026532177, CPUs: 64, MemBytes: 256 << 30, Source: "netlink"},
		Table: analyze.TableInfo{Count: 80, Listed: 80, Max: 262144, Buckets: 262144, Usage: 0.31, EntriesPerBucket: 0.0003,
			MemoryBytes: 80 * 256, MemoryAtMaxBytes: 262144 * 264, DefaultBuckets: 262144, DefaultMax: 262144, SlabSize: 256},
		Stats: analyze.StatsInfo{Available: true, Source: "netlink", Drop: 123456789, EarlyDrop: 98765432, InsertFailed: 1234567,
			ClashResolve: 7654321, ChainTooLong: 4242, Invalid: 99999999, Interval: 1.0,
			PerSecond: map[string]float64{"drop": 12345.6, "early_drop": 999.9, "insert_failed": 12.5, "invalid": 1000.1}},
		Breakdown: bd,
		Log: analyze.LogInfo{Source: "/dev/kmsg", TableFullEvents: 31, Suppressed: 1200, First: "2026-11-20T14:02:11Z", Last: "2026-11-20T14:02:31Z",
			NetNS: []host.NetNSCount{{Inode: 4026532177, Name: "a-namespace-name-that-goes-on-and-on-and-on-and-on-and-on-for-ever", Count: 21},
				{Inode: 4026532300, Count: 10}}, OtherNetNSEvents: 31},
		Namespaces: []host.NetNSUsage{
			{NetNS: host.NetNS{Name: "init", Inode: 4026531840}, Count: 80, Max: 262144},
			{NetNS: host.NetNS{Name: "a-namespace-name-that-goes-on-and-on-and-on-and-on-and-on-for-ever", Inode: 4026532177}, Count: 250000, Max: 262144},
			{NetNS: host.NetNS{Name: "pid:123456", Inode: 4026532300}, Error: "open /proc/123456/ns/net: the process exited while its namespace was being read, which happens with short-lived containers"},
		},
		Findings: []analyze.Finding{{ID: "unreplied-flood", Severity: analyze.Warning,
			Summary:     "41% of the table (33 entries) never got a reply: mostly udp/53 from 7 sources — a scan, a flood or a dead upstream",
			Explanation: "Entries that never saw a reply stay until their timeout (30 s for UDP, 120 s for SYN_SENT). See 'options single-request-reopen' and friends.",
			Evidence: map[string]any{"unreplied": 40, "total": 80, "share": 0.5,
				"services":    []map[string]any{{"proto": "udp", "port": 53, "unreplied": 40}, {"proto": "tcp", "port": 443, "unreplied": 0, "note": "a rather long note value that needs wrapping because it is long"}},
				"top_sources": bd.TopSources, "by_l4": map[string]int64{"udp": 40, "tcp": 0},
				"paths": []string{"/a/very/long/path/that/has/no/blanks/in/it/at/all/and/keeps/going/and/going/and/going/and/going/until/it/is/too/wide"}},
			Fixes: []string{
				"# a long comment that explains what the following commands do and why they need to run in this order before anything else",
				"nft add chain inet ctdoctor_raw prerouting '{ type filter hook prerouting priority raw; }'   # the raw hook runs before conntrack sees the packet",
				"nft add rule inet ctdoctor_raw prerouting ip6 saddr 2001:db8:85a3:1234:5678:8a2e:0:7334 udp dport 53 notrack",
				"echo " + longWord + " >> /etc/sysctl.d/90-conntrack.conf",
				// An nft batch as the planner prints it: one argument, a line a command.
				"ip netns exec demo nft '\ninsert rule inet fw input position 2 iif \"lo\" tcp sport 8081 tcp flags & (syn | ack) != syn ct state untracked accept comment \"ctdoctor notrack lo\"\n" +
					"create table inet ctdoctor_notrack_lo\nadd chain inet ctdoctor_notrack_lo output { type filter hook output priority -300; policy accept; }\n" +
					"add rule inet ctdoctor_notrack_lo output oif \"lo\" tcp dport 8081 notrack comment \"ctdoctor notrack lo\"'",
				"conntrack: {maxPerCore: 65536, min: 262144, tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 1h}   # kube-proxy's configuration, not a shell command",
			}}},
		Warnings: []string{"entries: reading the table over netlink failed after 1,234,567 entries: the socket's receive buffer overflowed (ENOBUFS); the breakdown covers the entries read before it"},
	}
}

type namedReport struct {
	name string
	r    *analyze.Report
}

func testReports(t *testing.T) []namedReport {
	var out []namedReport
	for _, h := range []string{"centos5", "k8s-node", "pre515", "ubuntu-noproc"} {
		out = append(out, namedReport{h, fixtureReport(t, h)})
	}
	return append(out, namedReport{"long", longReport(t)})
}

func renderText(t *testing.T, r *analyze.Report, o TextOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := Text(&b, r, o); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// With colour on, the escape codes must take no room: what a terminal
// shows is exactly the plain report, column for column.
func TestColorLayoutMatchesPlain(t *testing.T) {
	for _, tr := range testReports(t) {
		for _, w := range testWidths {
			plainOut := renderText(t, tr.r, TextOptions{Width: w, Verbose: true})
			colour := renderText(t, tr.r, TextOptions{Width: w, Verbose: true, Color: true})
			if !strings.Contains(colour, "\x1b[1m") {
				t.Fatalf("%s: no colour with Color", tr.name)
			}
			if StripANSI(colour) == plainOut {
				continue
			}
			pl, cl := strings.Split(plainOut, "\n"), strings.Split(StripANSI(colour), "\n")
			for i := range min(len(pl), len(cl)) {
				if pl[i] != cl[i] {
					t.Errorf("%s at %d columns, line %d differs with colour:\nplain:  %q\ncolour: %q", tr.name, w, i+1, pl[i], cl[i])
					break
				}
			}
			if len(pl) != len(cl) {
				t.Errorf("%s at %d columns: %d lines plain, %d with colour", tr.name, w, len(pl), len(cl))
			}
		}
	}
}

// The label column: every labelled value starts in column 12, coloured or not.
func TestLabelColumn(t *testing.T) {
	r := fixtureReport(t, "centos5")
	for _, colour := range []bool{false, true} {
		out := StripANSI(renderText(t, r, TextOptions{Width: 100, Color: colour}))
		for _, want := range []string{"Table      [", "Counters   drop ", "Kernel log 3 "} {
			if !strings.Contains(out, "\n"+want) {
				t.Errorf("colour %v: no line starts with %q:\n%s", colour, want, out)
			}
		}
	}
}

// overlong reports why a line wider than the width may be: it is part of
// a fix command and holds a single shell word that no break can shorten,
// or it is a fix that is not shell (printed unbroken). Anything else is
// an error. cont says whether the previous line ended in " \".
func overlong(line string, cont bool) (string, bool) {
	body := strings.TrimSpace(line)
	if i := strings.Index(line, "  $ "); i >= 0 && strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line[:i]), "fix")) == "" {
		body = line[i+4:]
		argv, _, ok := shellCommand(body)
		if ok && len(argv) > 0 && !isCommandName(argv[0]) {
			return "a fix that is not shell", true
		}
	} else if !cont {
		return "", false
	}
	body = strings.TrimSuffix(body, lineJoin)
	if argv, comment, ok := shellCommand(body); ok && len(argv) == 1 && comment == "" {
		return "one shell word: " + argv[0], true
	}
	return "", false
}

// No line is wider than the width, at 80, 100 and 120 columns, with and
// without colour, except fix commands that cannot be broken (checked
// explicitly: the long report has exactly two such lines at each width).
func TestTextFitsWidth(t *testing.T) {
	for _, tr := range testReports(t) {
		for _, w := range testWidths {
			for _, colour := range []bool{false, true} {
				out := renderText(t, tr.r, TextOptions{Width: w, Color: colour, Verbose: true})
				var exceptions []string
				cont := false
				for i, line := range strings.Split(StripANSI(out), "\n") {
					if n := VisibleWidth(line); n > w {
						why, ok := overlong(line, cont)
						if !ok {
							t.Errorf("%s at %d columns (colour %v): line %d is %d wide:\n%s", tr.name, w, colour, i+1, n, line)
						}
						exceptions = append(exceptions, why)
					}
					cont = strings.HasSuffix(line, lineJoin)
				}
				if tr.name == "long" {
					// The YAML line's text is 95 wide after the 17 columns of "    fix        $ ".
					want := []string{"one shell word: " + longWord}
					if w < 17+95 {
						want = append(want, "a fix that is not shell")
					}
					if strings.Join(exceptions, "\n") != strings.Join(want, "\n") {
						t.Errorf("long report at %d columns: overlong lines %q, want %q", w, exceptions, want)
					}
				}
			}
		}
	}
}

// On narrow terminals too (down to MinWidth), only unbreakable commands exceed.
func TestTextFitsNarrowWidths(t *testing.T) {
	for _, tr := range testReports(t) {
		for w := MinWidth; w < 80; w += 3 {
			out := renderText(t, tr.r, TextOptions{Width: w, Color: true, Verbose: true})
			cont := false
			for i, line := range strings.Split(StripANSI(out), "\n") {
				if n := VisibleWidth(line); n > w {
					if _, ok := overlong(line, cont); !ok {
						t.Errorf("%s at %d columns: line %d is %d wide:\n%s", tr.name, w, i+1, n, line)
					}
				}
				cont = strings.HasSuffix(line, lineJoin)
			}
		}
	}
}

// The breakdown's tables stand side by side when two fit the width and
// one under the other when they do not.
func TestBreakdownColumns(t *testing.T) {
	centos, long := fixtureReport(t, "centos5"), longReport(t)
	for _, tc := range []struct {
		name string
		r    *analyze.Report
		w    int
		two  bool
	}{
		// centos5's widest tables: Top sources (41) + By TCP state (38) + the gap (2) = 81.
		{"centos5", centos, 80, false},
		{"centos5", centos, 81, true},
		{"centos5", centos, 100, true},
		{"centos5", centos, 120, true},
		// IPv6 keys are cut to 22 columns side by side: 49 + 2 + By TCP state's 38 = 89.
		{"long", long, 80, false},
		{"long", long, 88, false},
		{"long", long, 89, true},
		{"long", long, 100, true},
		{"long", long, 120, true},
	} {
		out := StripANSI(renderText(t, tc.r, TextOptions{Width: tc.w, Color: true}))
		lines := strings.Split(out, "\n")
		var proto, state int = -1, -1
		for i, l := range lines {
			if strings.HasPrefix(l, "By protocol") {
				proto = i
			}
			if strings.Contains(l, "By TCP state") {
				state = i
			}
		}
		if proto < 0 || state < 0 {
			t.Fatalf("%s: no breakdown:\n%s", tc.name, out)
		}
		if two := proto == state; two != tc.two {
			t.Errorf("%s at %d columns: two columns %v, want %v:\n%s", tc.name, tc.w, two, tc.two, out)
		}
		if !tc.two {
			if lines[state] != "By TCP state" || !strings.Contains(out, "\nTop services (dport)\n") {
				t.Errorf("%s at %d columns: one column expected, each title on its own line:\n%s", tc.name, tc.w, out)
			}
		}
		if tc.name == "long" {
			// Cut to 22 columns side by side, up to 40 alone.
			addr := "2001:db8:85a3:1234:5678:8a2e:0:7334"
			bd := out[strings.Index(out, "By protocol"):strings.Index(out, "Network namespaces")]
			if got := strings.Contains(bd, "  "+addr+" "); got == tc.two {
				t.Errorf("%s at %d columns: full address %q shown %v", tc.name, tc.w, addr, got)
			}
		}
	}
}

// Fix commands broken over lines run exactly as the unbroken command:
// bash parses both (declare -f prints a function's body as bash
// understands it, without running it) and prints the same. A trailing
// comment moves below its command, word for word.
func TestFixCommandsRunAsPrinted(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to check the commands with")
	}
	var orig, printed []string
	var origComments, printedComments []string
	broken := 0
	for _, tr := range testReports(t) {
		var cmds, comments []string
		for _, f := range tr.r.Findings {
			for _, fx := range f.Fixes {
				if strings.HasPrefix(fx, "#") {
					continue
				}
				cmds = append(cmds, fx)
				_, c, _ := shellCommand(fx)
				comments = append(comments, c)
			}
		}
		for _, w := range testWidths {
			lines := strings.Split(StripANSI(renderText(t, tr.r, TextOptions{Width: w, Color: true})), "\n")
			var got, gotComments []string
			for i := 0; i < len(lines); i++ {
				j := strings.Index(lines[i], "  $ ")
				if j < 0 || strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[i][:j]), "fix")) != "" {
					continue
				}
				text := lines[i][j+4:]
				// A trailing backslash or a quote left open (an nft batch)
				// pulls in the next line.
				for _, _, ok := shellCommand(text); !ok && i+1 < len(lines); _, _, ok = shellCommand(text) {
					i++
					text += "\n" + lines[i]
					broken++
				}
				// The comment lines below the command, indented deeper than its "$".
				var comment []string
				for i+1 < len(lines) && strings.HasPrefix(lines[i+1], indent(continueCol)+"# ") {
					i++
					comment = append(comment, strings.TrimPrefix(lines[i], indent(continueCol)+"# "))
				}
				if comment == nil { // printed whole, its comment on its line
					_, c, _ := shellCommand(text[strings.LastIndexByte(text, '\n')+1:])
					comment = []string{c}
				}
				got = append(got, text)
				gotComments = append(gotComments, strings.Join(comment, " "))
			}
			if len(got) != len(cmds) {
				t.Fatalf("%s at %d columns: %d commands printed, the report has %d", tr.name, w, len(got), len(cmds))
			}
			for k := range cmds {
				if !strings.Contains(got[k], "\n") && !strings.Contains(cmds[k], "#") && got[k] != cmds[k] {
					t.Errorf("%s: an unbroken command must be printed as it is: %q, want %q", tr.name, got[k], cmds[k])
				}
			}
			orig, printed = append(orig, cmds...), append(printed, got...)
			origComments, printedComments = append(origComments, comments...), append(printedComments, gotComments...)
		}
	}
	if broken == 0 {
		t.Fatal("no command was broken over lines: the test checks nothing")
	}
	// An nft batch is printed indented, its long lines broken with a
	// backslash inside the quotes: bash must give nft the same words but
	// for blanks nft skips (at the start of a line, a backslash and a
	// newline between words).
	nfts := 0
	for i := range orig {
		if !nftBatch(strings.Split(orig[i], "\n")) {
			continue
		}
		nfts++
		if want, got := nftWords(t, bash, orig[i]), nftWords(t, bash, printed[i]); want != got {
			t.Errorf("printed nft batch reads differently:\nprinted:\n%s\ngot:  %q\nwant: %q", printed[i], got, want)
		}
	}
	if nfts == 0 {
		t.Fatal("no nft batch among the commands")
	}
	parse := func(cmds []string) []string {
		var script strings.Builder
		for i, c := range cmds {
			if nftBatch(strings.Split(c, "\n")) {
				c = ":" // compared above
			}
			fmt.Fprintf(&script, "f%d() {\n%s\n}\n", i, c)
		}
		script.WriteString("declare -f\n")
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", script.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Split(string(out), "\n}\n")
	}
	want, got := parse(orig), parse(printed)
	if len(want) != len(got) {
		t.Fatalf("bash printed %d functions for the originals, %d for the printed commands", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("printed command parses differently:\nprinted:\n%s\nbash: %s\nwant: %s", printed[i], got[i], want[i])
		}
	}
	for i := range origComments {
		if strings.Join(strings.Fields(origComments[i]), " ") != strings.Join(strings.Fields(printedComments[i]), " ") {
			t.Errorf("comment of %q: printed %q, want %q", orig[i], printedComments[i], origComments[i])
		}
	}
}

// nftWords is the words bash passes for cmd (run with printf in front, so
// nothing runs), the last one — an nft batch — as nft reads it: a
// backslash and a newline a blank, the blanks around and between words
// one, empty lines none.
func nftWords(t *testing.T, bash, cmd string) string {
	t.Helper()
	out, err := exec.Command(bash, "--norc", "--noprofile", "-c", `printf '%s\0' `+cmd).Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, cmd)
	}
	words := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	var batch []string
	for l := range strings.SplitSeq(strings.ReplaceAll(words[len(words)-1], "\\\n", " "), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			batch = append(batch, strings.Join(f, " "))
		}
	}
	words[len(words)-1] = strings.Join(batch, "\n")
	return strings.Join(words, "\x00")
}
