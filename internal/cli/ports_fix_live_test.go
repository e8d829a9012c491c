package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// local-ports-exhausted's fix, run exactly as the report prints it, in a
// namespace whose clients ran out of their 400 local ports (nginx to a
// loopback upstream behind a drop-policy firewall, short connections):
// it widens that namespace's port range and nothing else — the test
// process's own namespace keeps its range — nginx keeps answering, and new
// connections take ports outside the old range. The same change applied
// with `ctdoctor apply` (the plan made with the report) is undone by
// `ctdoctor rollback`: the range and the ruleset are byte for byte what
// they were.
func TestPortRangeFixAsPrinted(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", "sysctl")
	ns.Nft(nstest.DemoRuleset)
	const rangePath = "/proc/sys/net/ipv4/ip_local_port_range"
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40399")
	narrow := ns.Run("cat", rangePath)
	own, err := os.ReadFile(rangePath)
	if err != nil {
		t.Fatal(err)
	}
	ownUnchanged := func(when string) {
		t.Helper()
		if now, _ := os.ReadFile(rangePath); string(now) != string(own) {
			t.Fatalf("%s: the test process's own namespace changed its range: %q → %q", when, own, now)
		}
	}
	ns.StartNginx()
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "3s", "-H", "Connection: close", "http://127.0.0.1/")
	rulesetBefore := ns.Run("nft", "list", "ruleset")

	t.Setenv("COLUMNS", "80")
	var out, errb bytes.Buffer
	if code := Main([]string{"--netns", ns.Name, "--interval", "0", "--color", "never"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	// The plan made from the same table, for apply later.
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(planFile, []byte(run(t, "plan", "--netns", ns.Name, "--interval", "0", "--no-predict", "-o", "json")), 0o644); err != nil {
		t.Fatal(err)
	}

	cmds := printedCommands(t, text, "local-ports-exhausted")
	if len(cmds) != 1 || !strings.HasPrefix(cmds[0], "ip netns exec "+ns.Name+" sysctl -w ") {
		t.Fatalf("local-ports-exhausted prints %q, want one sysctl in the namespace; report:\n%s", cmds, text)
	}
	for _, c := range cmds {
		if o, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("printed command failed: %v\n%s\n%s", err, c, o)
		}
	}
	if got := strings.Fields(ns.Run("cat", rangePath)); strings.Join(got, " ") != "10000 65535" {
		t.Fatalf("the namespace's range after the printed fix: %q, want 10000 65535", got)
	}
	ownUnchanged("after the printed fix")
	ns.CurlOK(5, "after the printed fix")
	// New connections take ports of the new range (the old one is 0.7% of it).
	ns.Run("conntrack", "-F")
	ns.CurlOK(5, "after the flush")
	outside := 0
	for line := range strings.SplitSeq(ns.Run("conntrack", "-L", "-p", "tcp", "--dport", "80"), "\n") {
		for _, f := range strings.Fields(line) {
			if p, ok := strings.CutPrefix(f, "sport="); ok {
				if n, _ := strconv.Atoi(p); n >= 10000 && (n < 40000 || n > 40399) {
					outside++
				}
				break
			}
		}
	}
	if outside == 0 {
		t.Errorf("no connection to nginx used a port outside the old range 40000–40399")
	}

	// The same change through apply, and rollback.
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40399") // as the plan found it
	state := t.TempDir()
	if o := run(t, "apply", planFile, "--yes", "--state-dir", state); !strings.Contains(o, "Applied and verified") {
		t.Fatalf("apply:\n%s", o)
	}
	if got := strings.Fields(ns.Run("cat", rangePath)); strings.Join(got, " ") != "10000 65535" {
		t.Errorf("the namespace's range after apply: %q, want 10000 65535", got)
	}
	ownUnchanged("after apply")
	ns.CurlOK(3, "after apply")
	run(t, "rollback", "--state-dir", state)
	if got := ns.Run("cat", rangePath); got != narrow {
		t.Errorf("after rollback the range reads %q, want %q exactly", got, narrow)
	}
	if got := ns.Run("nft", "list", "ruleset"); got != rulesetBefore {
		t.Errorf("ruleset after rollback:\n%s\nwant\n%s", got, rulesetBefore)
	}
	ownUnchanged("after rollback")
	ns.CurlOK(3, "after rollback")
}
