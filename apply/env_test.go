package apply_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/internal/cli"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

// childEnv makes the test binary a child process: "cli" runs ctdoctor
// (the watchdog and rollback run this way), "apply" runs childApply.
const childEnv = "CTDOCTOR_APPLY_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "cli":
		os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
	case "apply":
		os.Exit(childApply())
	}
	os.Exit(m.Run())
}

// watchdogOpts runs the watchdog as this test binary in cli mode.
func watchdogOpts() apply.WatchdogOptions {
	return apply.WatchdogOptions{Self: os.Args[0], Env: []string{childEnv + "=cli"}, Mode: "process"}
}

// childApply applies the plan in $CHILD_PLAN under $CHILD_ROOT with
// state $CHILD_STATE (or, with $CHILD_ROLLBACK, rolls that apply back).
// With $CHILD_STOP ("before:2", "after:0", "end", "undo:3") it prints
// "STOP …" at that hook point and waits to be killed; with
// $CHILD_CONFIRM (a duration) it applies with a confirm window, prints
// "APPLIED id" and, with $CHILD_WAIT, waits to be killed.
func childApply() int {
	p, err := apply.ReadPlanFile(os.Getenv("CHILD_PLAN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	stop := os.Getenv("CHILD_STOP")
	opt := apply.Options{
		Root: os.Getenv("CHILD_ROOT"), StateDir: os.Getenv("CHILD_STATE"), Global: true, Yes: true,
		Out: os.Stderr, Watchdog: watchdogOpts(),
		Hook: func(hp apply.HookPoint) error {
			at := hp.Phase
			if hp.Phase != "end" {
				at = fmt.Sprintf("%s:%d", hp.Phase, hp.Index)
			}
			if at == stop {
				fmt.Printf("STOP %s\n", at)
				select {}
			}
			return nil
		},
	}
	if d := os.Getenv("CHILD_CONFIRM"); d != "" {
		opt.ConfirmWithin, _ = time.ParseDuration(d)
	}
	if id := os.Getenv("CHILD_ROLLBACK"); id != "" {
		if _, err := apply.Rollback(context.Background(), id, opt); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("ROLLED BACK")
		return 0
	}
	res, err := apply.Apply(context.Background(), p, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("APPLIED %s\n", res.ID)
	if os.Getenv("CHILD_WAIT") != "" {
		select {}
	}
	return 0
}

// child is a running childApply.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), childEnv+"=apply"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	})
	return c
}

// expect waits for the child's next line and checks its prefix.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			_ = c.cmd.Wait()
			t.Fatalf("child exited (%v) before printing %q", c.cmd.ProcessState, prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("child printed %q, want %q…", l, prefix)
		}
		return strings.TrimSpace(strings.TrimPrefix(l, prefix))
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not print %q within 30 s", prefix)
	}
	return ""
}

// kill9 kills the child with SIGKILL and reaps it.
func (c *child) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// operatorRuleset is the namespace's firewall before any apply: a
// stateful input chain with a drop policy (an RHEL-style host firewall).
const operatorRuleset = `table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" tcp dport 8080 accept
		tcp dport 22 accept
	}
}
`

// notrackScript is the plan's nft batch: the UNTRACKED accept first in
// the operator's chain, then ctdoctor's own raw-priority table.
const notrackScript = `insert rule inet fw input ct state untracked accept
create table inet ctdoctor_raw
add chain inet ctdoctor_raw prerouting { type filter hook prerouting priority raw; }
add chain inet ctdoctor_raw output { type filter hook output priority raw; }
add rule inet ctdoctor_raw prerouting iif "lo" notrack
add rule inet ctdoctor_raw output oif "lo" notrack
`

// env is a namespace with an operator's firewall and a fake root holding
// the global settings and /etc.
type env struct {
	ns   *nstest.NS
	root string
	plan *tune.Plan
	// the namespace's values before the plan
	timeWait, udp string
}

const (
	timeWaitPath = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait"
	udpPath      = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"
	maxPath      = "/proc/sys/net/netfilter/nf_conntrack_max"
	hashPath     = "/sys/module/nf_conntrack/parameters/hashsize"
	sysctlConf   = "/etc/sysctl.d/90-ctdoctor-conntrack.conf"
	modprobeConf = "/etc/modprobe.d/ctdoctor.conf"
	operatorConf = "# the operator's own settings\nnet.core.somaxconn = 4096\n"
)

// newEnv makes the namespace and the fake root, and a plan of 4 steps
// and 8 actions (2 sysctls in the namespace, one nft batch, one global
// sysctl, a module parameter, an edited file with its own mode and
// owner, a new file in a new directory, a new file in an existing one).
func newEnv(t *testing.T) *env {
	t.Helper()
	ns := nstest.New(t, "nft")
	ns.Nft(operatorRuleset)
	e := &env{ns: ns, root: fakeRoot(t)}
	read := func(p string) string {
		return strings.TrimSpace(ns.Run("cat", p))
	}
	e.timeWait, e.udp = read(timeWaitPath), read(udpPath)
	bootID, _ := os.ReadFile(filepath.Join(e.root, "proc/sys/kernel/random/boot_id"))
	e.plan = &tune.Plan{
		Schema: tune.PlanSchema, ID: "test-plan-1", CreatedAt: time.Now().UTC().Truncate(time.Second),
		Host: tune.PlanHost{Hostname: "fakehost", BootID: strings.TrimSpace(string(bootID)), Kernel: "6.18-test",
			NetNS: ns.Name, NetNSInode: ns.Inode(), Root: e.root},
		Global: true,
		Steps: []tune.Step{
			{Finding: "timewait-dominant", Title: "shorten the TIME_WAIT and UDP timeouts", Scope: tune.ScopeNetNS,
				Key: "net.netfilter.nf_conntrack_tcp_timeout_time_wait", Current: e.timeWait, Proposed: "30",
				Commands: []string{"sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30"},
				Actions: []tune.Action{
					{Kind: tune.KindSysctl, Path: timeWaitPath, Expect: e.timeWait, Value: "30"},
					{Kind: tune.KindSysctl, Path: udpPath, Expect: e.udp, Value: "17"},
				}},
			{Finding: "loopback-tracked", Title: "NOTRACK loopback, UNTRACKED accept first", Scope: tune.ScopeNetNS,
				Commands: []string{"nft -f -"},
				Actions:  []tune.Action{{Kind: tune.KindNft, Script: notrackScript}}},
			{Finding: "table-full", Title: "raise the table and hash size", Scope: tune.ScopeGlobal,
				Actions: []tune.Action{
					{Kind: tune.KindSysctl, Path: maxPath, Expect: "262144", Value: "524288"},
					{Kind: tune.KindModuleParam, Path: hashPath, Expect: "65536", Value: "524288"},
				}},
			{Finding: "table-full", Title: "persist", Scope: tune.ScopeGlobal, Persist: sysctlConf,
				Actions: []tune.Action{
					{Kind: tune.KindFile, Path: sysctlConf, Expect: operatorConf,
						Value: operatorConf + "net.netfilter.nf_conntrack_max = 524288\nnet.netfilter.nf_conntrack_tcp_timeout_time_wait = 30\n"},
					{Kind: tune.KindFile, Path: modprobeConf, ExpectAbsent: true, Value: "options nf_conntrack hashsize=524288\n"},
					{Kind: tune.KindFile, Path: "/etc/modules-load.d/ctdoctor.conf", ExpectAbsent: true, Value: "nf_conntrack\n", Mode: 0o600},
				}},
		},
	}
	return e
}

// fakeRoot is a root directory whose /proc/sys, /sys/module and /etc are
// plain files.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	files := map[string]string{
		"proc/sys/kernel/hostname":                    "fakehost\n",
		"proc/sys/kernel/osrelease":                   "6.18-test\n",
		"proc/sys/kernel/random/boot_id":              "0b9a3f7e-1c1d-4c59-9d55-3c1f2d7a8e11\n",
		"proc/sys/net/netfilter/nf_conntrack_max":     "262144\n",
		"sys/module/nf_conntrack/parameters/hashsize": "65536\n",
		"etc/sysctl.d/90-ctdoctor-conntrack.conf":     operatorConf,
		"etc/sysctl.d/99-operator.conf":               "vm.swappiness = 10\n",
		"etc/modules-load.d/other.conf":               "br_netfilter\n",
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(root, "etc/sysctl.d/90-ctdoctor-conntrack.conf")
	if err := os.Chmod(conf, 0o640); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 { // an owner apply must keep (only root can give files away)
		if err := os.Chown(conf, 1234, 5678); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// writePlan writes e's plan as JSON and returns its path.
func (e *env) writePlan(t *testing.T) string {
	t.Helper()
	b, err := json.MarshalIndent(e.plan, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// snapshot is everything the plan can touch, as text: the namespace's
// ruleset with handles, every readable sysctl under
// /proc/sys/net/netfilter in it, and every file and directory of the fake
// root with its mode, owner and bytes.
func (e *env) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("== nft -a list ruleset\n")
	b.WriteString(e.ns.Run("nft", "-a", "list", "ruleset"))
	b.WriteString("== sysctls\n")
	err := e.ns.Do(func() error {
		ents, err := os.ReadDir("/proc/sys/net/netfilter")
		if err != nil {
			return err
		}
		for _, ent := range ents {
			if ent.IsDir() || ent.Name() == "nf_conntrack_count" {
				continue
			}
			v, err := os.ReadFile(filepath.Join("/proc/sys/net/netfilter", ent.Name()))
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "%s = %q\n", ent.Name(), v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(treeText(t, e.root))
	return b.String()
}

// treeText lists a directory tree: path, type, mode, owner, bytes.
func treeText(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "== %s\n", filepath.Base(root))
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			c, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// same fails the test when two snapshots differ, showing the lines that do.
func same(t *testing.T, what, before, after string) {
	t.Helper()
	if before == after {
		return
	}
	bl, al := strings.Split(before, "\n"), strings.Split(after, "\n")
	var diff []string
	for i := 0; i < max(len(bl), len(al)); i++ {
		var x, y string
		if i < len(bl) {
			x = bl[i]
		}
		if i < len(al) {
			y = al[i]
		}
		if x != y {
			diff = append(diff, fmt.Sprintf("line %d:\n  before %s\n  after  %s", i+1, x, y))
		}
	}
	t.Fatalf("%s: not as before:\n%s", what, strings.Join(diff, "\n"))
}

// opts are the Options of an in-process apply in e.
func (e *env) opts(t *testing.T, stateDir string) apply.Options {
	return apply.Options{Root: e.root, StateDir: stateDir, Global: true, Yes: true, Out: testWriter{t}, Watchdog: watchdogOpts()}
}

// testWriter sends output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// journalOf reads an apply's journal.
func journalOf(t *testing.T, stateDir, id string) *apply.Journal {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "applies", id, "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j apply.Journal
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	return &j
}

// onlyApply returns the id of the one apply in stateDir.
func onlyApply(t *testing.T, stateDir string) string {
	t.Helper()
	h, err := apply.History(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 1 {
		t.Fatalf("history has %d applies, want 1: %+v", len(h), h)
	}
	return h[0].ID
}

// runCLI runs ctdoctor (this binary in cli mode) and returns its output
// and exit status.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=cli")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// waitGone waits for a process to exit.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			return
		}
		// an orphan the container's init has not reaped yet has exited too
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := strings.LastIndexByte(string(st), ')'); i > 0 && strings.HasPrefix(string(st[i+1:]), " Z") {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("process %d still runs after %v", pid, within)
}
