package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// good is a valid scenario; the error cases below break one line of it.
const good = `name: web
duration: 10m
settings:
  net.netfilter.nf_conntrack_max: 65536
  nf_conntrack_tcp_timeout_time_wait: 30
notrack:
  - iface: lo
workloads:
  - name: visitors
    rate: 100
    client: 198.51.100.0/24
    server: 192.0.2.10
    server_port: 443
  - name: upstream
    rate: 10k
    client: 127.0.0.1
    server: 127.0.0.1
    server_port: 8080-8083
    iface: lo
    closer: server
    lifetime: {exponential: 5ms}
`

func TestParseScenario(t *testing.T) {
	sc, err := ParseScenario("scenario.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "web" || sc.Duration != 10*time.Minute || sc.Step != time.Second {
		t.Errorf("name %q duration %s step %s", sc.Name, sc.Duration, sc.Step)
	}
	if sc.Settings[engine.SetMax] != 65536 || sc.Settings[engine.SetTCPTimeoutTimeWait] != 30 || len(sc.Settings) != 2 {
		t.Errorf("settings %v", sc.Settings)
	}
	if len(sc.NoTrack) != 2 || sc.NoTrack[0].Hook != engine.Prerouting || sc.NoTrack[1].Hook != engine.Output || sc.NoTrack[1].Iface != "lo" {
		t.Errorf("a hook-less notrack rule should apply at both hooks: %+v", sc.NoTrack)
	}
	up := sc.Workloads[1]
	if up.Rate.Value != 10000 || up.ServerPorts != (engine.PortRange{Lo: 8080, Hi: 8083}) || up.ClientCloses ||
		!up.Lifetime.Exponential || up.Lifetime.Mean != 5*time.Millisecond || up.Proto != conntrack.TCP {
		t.Errorf("upstream %+v", up)
	}
	if up.ClientPorts != (engine.PortRange{Lo: 32768, Hi: 60999}) || up.SYNRetries != 6 {
		t.Errorf("defaults: client ports %v, syn_retries %d", up.ClientPorts, up.SYNRetries)
	}
}

func TestParseRates(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		at   time.Duration
		want float64
	}{
		{"rate: 1.5k", time.Minute, 1500},
		{"rate: {from: 100, to: 300}", 5 * time.Minute, 200}, // half way through 10 m
		{"rate: {peak: 1000, trough: 200, peak_at: \"06:00\"}", 6 * time.Hour, 1000},
		{"rate: {peak: 1000, trough: 200, peak_at: \"06:00\"}", 18 * time.Hour, 200}, // 12 h from the peak
		{"rate: {peak: 1000, trough: 200, peak_at: 6h}", 12 * time.Hour, 600},        // a quarter day: half way
	} {
		y := strings.Replace(good, "rate: 100", tc.yaml, 1)
		sc, err := ParseScenario("s.yaml", []byte(y))
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		w := sc.Workloads[0]
		if got := w.Rate.At(tc.at, 0, sc.Duration); got < tc.want-1e-6 || got > tc.want+1e-6 {
			t.Errorf("%s at %s = %g, want %g", tc.yaml, tc.at, got, tc.want)
		}
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           string
	}{
		{"bad yaml", "    rate: 100", "    rate: \"100", "s.yaml:10: invalid YAML: found unexpected end of stream"},
		{"unknown top field", "duration: 10m", "duraton: 10m", `s.yaml:2: unknown field "duraton" (want one of: name, description, duration`},
		{"unknown workload field", "    server_port: 443", "    server_prot: 443", `s.yaml:13: workloads[0]: unknown field "server_prot"`},
		{"bad rate", "    rate: 10k", `    rate: "10k/s"`, `s.yaml:15: workloads[1].rate: "10k/s" — want a number of connections per second like 10000 or "10k"`},
		{"negative rate", "    rate: 100", "    rate: -5", `s.yaml:10: workloads[0].rate: "-5" — want a number of connections per second`},
		{"ramp without to", "    rate: 100", "    rate: {from: 100}", "s.yaml:10: workloads[0].rate: a ramp needs both from and to"},
		{"bad duration", "duration: 10m", "duration: 600", `s.yaml:2: duration: "600" — want a duration like "90s", "5m", "1h" or "2d"`},
		{"bad lifetime", "    lifetime: {exponential: 5ms}", "    lifetime: {gaussian: 5ms}", `s.yaml:21: workloads[1].lifetime: unknown field "gaussian" (want one of: fixed, exponential)`},
		{"unknown setting", "  nf_conntrack_tcp_timeout_time_wait: 30", "  nf_conntrack_tcp_timeout_timewait: 30", `s.yaml:5: settings.nf_conntrack_tcp_timeout_timewait: unknown setting "nf_conntrack_tcp_timeout_timewait"`},
		{"bad setting value", "  net.netfilter.nf_conntrack_max: 65536", "  net.netfilter.nf_conntrack_max: 0", "s.yaml:4: settings.net.netfilter.nf_conntrack_max: setting nf_conntrack_max=0: must be between 1 and"},
		{"setting not a number", "  net.netfilter.nf_conntrack_max: 65536", "  net.netfilter.nf_conntrack_max: lots", `s.yaml:4: settings.net.netfilter.nf_conntrack_max: setting nf_conntrack_max: value "lots" is not an integer`},
		{"bad prefix", "    client: 198.51.100.0/24", "    client: 198.51.100.0/33", `s.yaml:11: workloads[0].client: "198.51.100.0/33" — want an address like "10.0.0.1" or a prefix`},
		{"mixed families", "    server: 192.0.2.10", "    server: 2001:db8::1", "s.yaml:12: workloads[0].server: is IPv6 but client is IPv4"},
		{"bad port range", "    server_port: 8080-8083", "    server_port: 8083-8080", `s.yaml:18: workloads[1].server_port: "8083-8080" — want a port like 8080 or a range like "8080-8087"`},
		{"bad notrack hook", "  - iface: lo", "  - {iface: lo, hook: input}", `s.yaml:7: notrack[0].hook: "input" — want prerouting, output or both`},
		{"bad proto", "    rate: 100", "    rate: 100\n    proto: sctp", `s.yaml:11: workloads[0].proto: "sctp" — want tcp, udp or icmp`},
		{"syn flood on udp", "    rate: 100", "    rate: 100\n    proto: udp\n    syn_flood: true", "s.yaml:12: workloads[0].syn_flood: needs proto tcp (is udp)"},
		{"interval on short", "    rate: 100", "    rate: 100\n    interval: 1s", "s.yaml:11: workloads[0].interval: applies to kind: keepalive only"},
		{"bad closer", "    closer: server", "    closer: both", `s.yaml:20: workloads[1].closer: "both" — want client or server`},
		{"bad share", "    rate: 100", "    rate: 100\n    unanswered: 120%", `s.yaml:11: workloads[0].unanswered: "120%" — want a share like 0.05 or "5%" between 0 and 1`},
		{"missing server port", "    server_port: 443\n", "", "s.yaml:9: workloads[0].server_port: missing"},
		{"notrack not a list", "notrack:\n  - iface: lo", "notrack: lo", `s.yaml:6: notrack: "lo" — want a list`},
		{"given twice", "duration: 10m", "duration: 10m\nduration: 5m", `s.yaml:3: duration: given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(good, tc.from, tc.to, 1)
			if y == good {
				t.Fatalf("%q not in the scenario", tc.from)
			}
			_, err := ParseScenario("s.yaml", []byte(y))
			if err == nil {
				t.Fatalf("no error for\n%s", y)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

func TestParseErrorsWholeFile(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"", "s.yaml: empty scenario"},
		{"# just a comment\n", "s.yaml: empty scenario"},
		{"- a\n- b\n", `s.yaml:1: a list — want a mapping with the fields name, description, duration`},
		{"name: x\n", "s.yaml:1: duration: missing"},
		{"name: x\nduration: 1m\n", "s.yaml:1: workloads: missing"},
		{"name: x\nduration: 1m\nworkloads: []\n", "s.yaml:3: workloads: empty"},
		{"a: &a [*a]\n", "s.yaml"},
		{"name: x\n\tduration: 1m\n", "s.yaml:2: invalid YAML"},
	} {
		_, err := ParseScenario("s.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestBuiltinsParseAndDescribe(t *testing.T) {
	list := Builtins()
	want := []string{"nginx-local-upstream", "nginx-local-upstream-keepalive", "nginx-local-upstream-notrack",
		"syn-flood", "dns-udp", "docker-node", "middlebox-idle-drop", "daily-curve"}
	have := map[string]bool{}
	for _, b := range list {
		have[b.Name] = true
		if b.Description == "" || strings.HasPrefix(b.Description, "(broken") {
			t.Errorf("%s: description %q", b.Name, b.Description)
		}
		sc, err := BuiltinScenario(b.Name)
		if err != nil {
			t.Errorf("%s: %v", b.Name, err)
			continue
		}
		if sc.Name != b.Name {
			t.Errorf("built-in %s calls itself %q", b.Name, sc.Name)
		}
	}
	for _, n := range want {
		if !have[n] {
			t.Errorf("built-in %s missing", n)
		}
	}
	if _, err := Load("no-such-scenario"); err == nil || !strings.Contains(err.Error(), "nginx-local-upstream") {
		t.Errorf("unknown name: %v (want the built-ins listed)", err)
	}
	if _, err := Load("missing/file.yaml"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "1h": time.Hour, "2d": 48 * time.Hour,
		"1d12h": 36 * time.Hour, "0": 0, "250ms": 250 * time.Millisecond} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "90", "-1s", "d", "1x", "+5s", "1dd"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

// TestParseYAMLErrorLine mis-indents one line of the good scenario at a
// time and checks that the error names that line (issue 8: a key
// mis-indented on line 11 was reported at line 3, the start of the block
// that holds it, counted from 0).
func TestParseYAMLErrorLine(t *testing.T) {
	for _, tc := range []struct {
		line   int    // 1-based line of good to re-indent
		indent string // its new indentation
		want   int    // the line the error must name
		hint   string // a part of the message
	}{
		{4, "   ", 5, "this line has 2 spaces, line 4 has 3"}, // the first key of a block sets its indentation: the parser stops at the next
		{5, "   ", 5, "mapping values are not allowed"},       // a settings key one space too deep: the value above goes on
		{5, " ", 5, "this line has 1 space, line 4 has 2"},    // … and one too shallow
		{11, "   ", 11, "this line has 3 spaces, line 10 has 4"},
		{11, "      ", 11, "mapping values are not allowed"}, // a continuation of the line above's value
		{14, "   ", 14, "did not find expected '-' indicator"},
		{14, " ", 14, ""},
		{17, "     ", 17, ""},
		{21, "   ", 21, ""},
		{21, "  ", 21, "did not find expected '-' indicator"},
	} {
		lines := strings.Split(good, "\n")
		lines[tc.line-1] = tc.indent + strings.TrimLeft(lines[tc.line-1], " ")
		y := strings.Join(lines, "\n")
		_, err := ParseScenario("bad1.yaml", []byte(y))
		want := fmt.Sprintf("bad1.yaml:%d: invalid YAML: ", tc.want)
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("line %d re-indented to %d: %v, want %q…%q\n%s", tc.line, len(tc.indent), err, want, tc.hint, y)
		}
	}
	// A problem on the last line, without a final newline, and a
	// syntax error that is not about indentation.
	for _, tc := range []struct{ yaml, want string }{
		{strings.TrimSuffix(good, "\n") + "\n   bad: 1", "bad1.yaml:22: invalid YAML: did not find expected '-' indicator"},
		{strings.Replace(good, "rate: 10k", "rate: \"10k", 1), "bad1.yaml:"},
		{"name: x\nduration: [1m\n", "bad1.yaml:"},
	} {
		_, err := ParseScenario("bad1.yaml", []byte(tc.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}
