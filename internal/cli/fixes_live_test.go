package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// printedCommands returns the fix commands of one finding exactly as the
// text report prints them: each "$ " line with the continuation lines a
// trailing backslash pulls in, as a person would copy them.
func printedCommands(t *testing.T, text, id string) []string {
	t.Helper()
	var cmds []string
	in := false
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "● ") {
			f := strings.Fields(l)
			in = len(f) > 2 && f[2] == id
			continue
		}
		if !in {
			continue
		}
		trimmed := strings.TrimSpace(l)
		if !strings.HasPrefix(trimmed, "$ ") {
			continue
		}
		cmd := strings.TrimPrefix(trimmed, "$ ")
		for unfinished(cmd) && i+1 < len(lines) {
			i++
			cmd += "\n" + lines[i]
		}
		cmds = append(cmds, cmd)
	}
	if len(cmds) == 0 {
		t.Fatalf("no printed commands for %s in:\n%s", id, text)
	}
	return cmds
}

// unfinished reports whether a printed command goes on on the next line:
// it ends in a backslash outside quotes, or a quote is left open (an nft
// batch in single quotes, a line of the batch a line).
func unfinished(cmd string) bool {
	var quote byte
	for i := 0; i < len(cmd); i++ {
		switch c := cmd[i]; {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			if i == len(cmd)-1 {
				return true
			}
			i++
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		}
	}
	return quote != 0
}

// The new user's case: namespace whose firewall is table inet fw (input
// policy drop, loopback not accepted as a whole), nginx proxying to a
// local upstream on loopback. Before, the printed fixes changed the host
// (no ip netns exec), named a table that does not exist (inet filter),
// and — pasted anyway — took nginx down. Now every printed command of
// loopback-tracked and timewait-dominant, pasted in order exactly as the
// 80-column text report shows it, runs, keeps nginx answering 200, and
// ends the tracking of loopback traffic.
func TestPrintedFixesKeepNginxUp(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	// Enough short connections through nginx to its upstream for the
	// loopback and TIME_WAIT findings.
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")
	before := ns.LoopbackEntries(80, 8081)
	if before < 500 {
		t.Fatalf("only %d loopback entries after the load", before)
	}

	t.Setenv("COLUMNS", "80")
	var out, errb bytes.Buffer
	if code := Main([]string{"--netns", ns.Name, "--interval", "0", "--color", "never"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	for _, id := range []string{"loopback-tracked", "timewait-dominant"} {
		for _, c := range printedCommands(t, text, id) {
			if !strings.HasPrefix(c, "ip netns exec "+ns.Name+" ") {
				// the one kind of command allowed without the prefix is a
				// global one, which the report marks as for the host
				if !strings.Contains(text, "on the host itself") {
					t.Errorf("%s: command would run on the host, not in the namespace:\n%s", id, c)
				}
				continue
			}
			if strings.Contains(c, "inet filter") {
				t.Errorf("%s: names a table this namespace does not have:\n%s", id, c)
			}
			if o, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
				t.Fatalf("%s: printed command failed: %v\n%s\n%s\nreport:\n%s", id, err, c, o, text)
			}
			ns.CurlOK(3, "after: "+c)
		}
	}
	if got := ns.Run("sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_time_wait"); strings.TrimSpace(got) != "30" {
		t.Errorf("time_wait timeout %q after the fix, want 30", got)
	}
	ns.Run("conntrack", "-F")
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "1s", "-H", "Connection: close", "http://127.0.0.1/")
	ns.CurlOK(5, "after all fixes")
	if n := ns.LoopbackEntries(80, 8081); n != 0 {
		t.Errorf("%d loopback entries after NOTRACK (before: %d), want 0", n, before)
	}
	// A second diagnosis finds nothing more to do for loopback.
	out.Reset()
	if code := Main([]string{"--netns", ns.Name, "--interval", "0", "--color", "never"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "loopback-tracked") {
		t.Errorf("loopback-tracked still reported after the fix:\n%s", out.String())
	}
}
