package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

func planJSON(t *testing.T, args ...string) *tune.Plan {
	t.Helper()
	out := run(t, append(append([]string{"plan"}, args...), "-o", "json")...)
	var p tune.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	if p.Schema != tune.PlanSchema || p.ID == "" {
		t.Fatalf("plan header: %+v", p)
	}
	return &p
}

// A fixture host's plan: one value per setting, the legacy names and
// /etc/sysctl.conf on CentOS 5, the hash size in modprobe, and every
// step says what it changes with a command.
func TestPlanFixtures(t *testing.T) {
	p := planJSON(t, "--root", "../../host/testdata/hosts/centos5", "--no-predict")
	keys := map[string]string{}
	for _, s := range p.Steps {
		if len(s.Commands) == 0 || len(s.Actions) == 0 || s.Title == "" {
			t.Errorf("step without commands, actions or title: %+v", s)
		}
		if prev, ok := keys[s.Key]; ok && prev != s.Proposed {
			t.Errorf("%s proposed twice: %s and %s", s.Key, prev, s.Proposed)
		}
		keys[s.Key] = s.Proposed
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_conntrack_max":                               "131072",
		"/sys/module/ip_conntrack/parameters/hashsize":            "131072",
		"net.ipv4.netfilter.ip_conntrack_tcp_timeout_established": "86400",
	} {
		if keys[k] != v {
			t.Errorf("%s = %q, want %s (all: %v)", k, keys[k], v, keys)
		}
	}
	if _, ok := keys["/etc/sysctl.conf"]; !ok {
		t.Errorf("no /etc/sysctl.conf step on a legacy host: %v", keys)
	}
	// The NOTRACK of the busy port cannot be placed without the live ruleset.
	if len(p.Skipped) == 0 || !strings.Contains(p.Skipped[0].Reason, "ruleset was not read") {
		t.Errorf("skipped: %+v", p.Skipped)
	}
	// -o sh is a script the shell accepts.
	script := run(t, "plan", "--root", "../../host/testdata/hosts/centos5", "--no-predict", "-o", "sh")
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v: %s\n%s", err, out, script)
	}
}

// The plan's prediction for a full table: drops before, none after.
func TestPlanPredicts(t *testing.T) {
	p := planJSON(t, "--root", "../../host/testdata/hosts/centos5")
	if p.Prediction == nil {
		t.Fatal("no prediction")
	}
	if p.Prediction.Before.Drops == 0 || p.Prediction.After.Drops != 0 || p.Prediction.After.Max != 131072 {
		t.Errorf("prediction: %+v", p.Prediction)
	}
}

// The demo namespace (table inet fw, policy drop, nginx to a local
// upstream): the plan's script, run as printed, keeps nginx answering and
// ends loopback tracking; a plan made afterwards has nothing left to do
// for the namespace.
func TestPlanScriptInNamespace(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")

	p := planJSON(t, "--netns", ns.Name, "--interval", "0")
	if p.Host.NetNS != ns.Name || p.Global {
		t.Fatalf("plan for %q, global %v", p.Host.NetNS, p.Global)
	}
	var notrack, timewait bool
	for _, s := range p.Applicable() {
		notrack = notrack || s.Notrack != nil && s.Notrack.Loopback
		timewait = timewait || s.Key == "net.netfilter.nf_conntrack_tcp_timeout_time_wait"
		for _, c := range s.Commands {
			if !strings.HasPrefix(c, "ip netns exec "+ns.Name+" ") {
				t.Errorf("a namespace step's command would run on the host: %s", c)
			}
		}
	}
	if !notrack || !timewait {
		t.Fatalf("plan lacks NOTRACK of loopback or the TIME_WAIT timeout: %+v", p.Steps)
	}
	script := filepath.Join(t.TempDir(), "fix.sh")
	if err := os.WriteFile(script, []byte(run(t, "plan", "--netns", ns.Name, "--interval", "0", "--no-predict", "-o", "sh")), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", script).CombinedOutput(); err != nil {
		b, _ := os.ReadFile(script)
		t.Fatalf("script: %v: %s\n%s", err, out, b)
	}
	ns.CurlOK(5, "after the script")
	ns.Run("conntrack", "-F")
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "1s", "-H", "Connection: close", "http://127.0.0.1/")
	if n := ns.LoopbackEntries(80, 8081); n != 0 {
		t.Errorf("%d loopback entries after the plan, want 0", n)
	}
	again := planJSON(t, "--netns", ns.Name, "--interval", "0", "--no-predict")
	if n := len(again.Applicable()); n != 0 {
		t.Errorf("a plan after the script still has %d steps: %+v", n, again.Applicable())
	}
	var text bytes.Buffer
	if code := Main([]string{"plan", "--netns", ns.Name, "--interval", "0", "--no-predict", "--color", "never"}, &text, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(text.String(), "Nothing to do") && len(again.Steps) == 0 {
		t.Errorf("empty plan's text does not say so:\n%s", text.String())
	}
}

func TestPlanUsage(t *testing.T) {
	for _, args := range [][]string{
		{"plan", "-o", "yaml"}, {"plan", "--root", "x", "--snapshot", "y"}, {"plan", "--root", "x", "--netns", "y"}, {"plan", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// apply with no plan file plans afresh and applies; rollback restores the
// namespace's ruleset byte for byte.
func TestApplyAfresh(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")
	before := ns.Run("nft", "list", "ruleset")
	state := t.TempDir()
	out := run(t, "apply", "--netns", ns.Name, "--yes", "--state-dir", state)
	if !strings.Contains(out, "Applied and verified") {
		t.Fatalf("apply output:\n%s", out)
	}
	ns.CurlOK(3, "after apply")
	ns.Run("conntrack", "-F")
	ns.CurlOK(3, "after flush")
	if n := ns.LoopbackEntries(80, 8081); n != 0 {
		t.Errorf("%d loopback entries after apply, want 0", n)
	}
	if out := run(t, "apply", "--netns", ns.Name, "--yes", "--state-dir", state); !strings.Contains(out, "Nothing to do") {
		t.Errorf("second apply:\n%s", out)
	}
	run(t, "rollback", "--state-dir", state)
	if got := ns.Run("nft", "list", "ruleset"); got != before {
		t.Errorf("ruleset after rollback:\n%s\nwant\n%s", got, before)
	}
	ns.CurlOK(3, "after rollback")
}
