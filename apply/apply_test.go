package apply_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

// TestApplyRollback applies the hand-made plan (timeouts in the
// namespace, an nft batch with a raw-priority table and an accept rule
// inserted into the operator's chain, global values and files in the
// fake root), checks every value against the kernel and the files, then
// rolls back: the ruleset, every sysctl and every file are byte for byte
// what they were. A second rollback is "nothing to do".
func TestApplyRollback(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot(t)
	hostBefore := hostState(t)
	state := t.TempDir()
	res, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 8 || res.State != apply.StateApplied {
		t.Fatalf("result %+v, want 8 changes, applied", res)
	}
	// the kernel's values, read by other means than apply's
	if got := strings.TrimSpace(e.ns.Run("sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_time_wait")); got != "30" {
		t.Errorf("time_wait = %s, want 30", got)
	}
	if got := strings.TrimSpace(e.ns.Run("sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout")); got != "17" {
		t.Errorf("udp_timeout = %s, want 17", got)
	}
	rs := e.ns.Run("nft", "list", "ruleset")
	input := e.ns.Run("nft", "list", "chain", "inet", "fw", "input")
	first := strings.TrimSpace(strings.Split(strings.SplitAfter(input, "policy drop;\n")[1], "\n")[0])
	if first != "ct state untracked accept" {
		t.Errorf("first rule of the operator's chain is %q, want the UNTRACKED accept:\n%s", first, input)
	}
	for _, want := range []string{"table inet ctdoctor_raw", "type filter hook prerouting priority raw", `iif "lo" notrack`, `oif "lo" notrack`} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(e.root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(maxPath); got != "524288\n" {
		t.Errorf("fake root max = %q", got)
	}
	if got := read(hashPath); got != "524288\n" {
		t.Errorf("fake root hashsize = %q", got)
	}
	if got := read(sysctlConf); !strings.HasPrefix(got, operatorConf) || !strings.Contains(got, "nf_conntrack_max = 524288\n") {
		t.Errorf("%s = %q", sysctlConf, got)
	}
	var st os.FileInfo
	if st, err = os.Stat(filepath.Join(e.root, sysctlConf)); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("the edited file lost its mode: %v %v", st.Mode(), err)
	}
	if st, err = os.Stat(filepath.Join(e.root, "/etc/modules-load.d/ctdoctor.conf")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v %v, want 0600", st.Mode(), err)
	}
	if strings.Contains(treeText(t, e.root), ".ctdoctor-") {
		t.Error("a temporary file was left in the root")
	}
	// everything happened in the namespace: the test's own is untouched
	same(t, "the test process's own namespace, applied", hostBefore, hostState(t))
	// the journal recorded what undo needs
	j := journalOf(t, state, res.ID)
	if j.State != apply.StateApplied || len(j.Actions) != 8 {
		t.Fatalf("journal state %s, %d actions", j.State, len(j.Actions))
	}
	for _, r := range j.Actions {
		if r.Status != apply.ActDone {
			t.Errorf("action %s %s is %s", r.Kind, r.Path, r.Status)
		}
	}
	if nft := j.Actions[2].Nft; nft == nil || len(nft.Objects) != 6 || !nft.Echoed {
		t.Errorf("nft record %+v, want the 6 objects the batch added", nft)
	} else if o := nft.Objects[0]; o.Kind != "rule" || o.Table != "fw" || o.Chain != "input" || o.Handle == 0 {
		t.Errorf("first object %+v, want the rule inserted into inet fw input", o)
	}
	if p := j.Actions[5].Prev; p == nil || string(p.Content) != operatorConf || p.Mode != 0o640 || p.UID != 1234 || p.GID != 5678 {
		t.Errorf("journal's previous file state %+v", p)
	}
	if p := j.Actions[6].Prev; p == nil || !p.Absent || len(p.CreatedDirs) != 1 {
		t.Errorf("journal's previous state of the new file %+v, want absent with one created directory", p)
	}

	rb, err := apply.Rollback(context.Background(), "", e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	if rb.State != apply.StateRolledBack || rb.Changed != 8 {
		t.Errorf("rollback %+v", rb)
	}
	same(t, "after rollback", before, e.snapshot(t))
	rb, err = apply.Rollback(context.Background(), res.ID, e.opts(t, state))
	if err != nil || !rb.NothingToDo {
		t.Errorf("second rollback: %+v %v, want nothing to do", rb, err)
	}
	h, err := apply.History(state)
	if err != nil || len(h) != 1 || h[0].State != "rolled back" || h[0].Changed != 8 {
		t.Errorf("history %+v %v", h, err)
	}
}

// TestFailureAtEachAction injects a failure before and after each action
// in turn (and after the last, before the journal says applied): Apply
// fails with ErrFailed, says it undid what was done, and the namespace
// and the fake root are exactly as before.
func TestFailureAtEachAction(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot(t)
	points := []string{"end"}
	for k := range 8 {
		points = append(points, fmt.Sprintf("before:%d", k), fmt.Sprintf("after:%d", k))
	}
	for _, at := range points {
		t.Run(at, func(t *testing.T) {
			state := t.TempDir()
			opt := e.opts(t, state)
			opt.Hook = func(hp apply.HookPoint) error {
				p := hp.Phase
				if p != "end" {
					p = fmt.Sprintf("%s:%d", hp.Phase, hp.Index)
				}
				if p == at {
					return errors.New("injected failure")
				}
				return nil
			}
			_, err := apply.Apply(context.Background(), e.plan, opt)
			if !errors.Is(err, apply.ErrFailed) || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "the host is as it was") {
				t.Fatalf("err = %v, want ErrFailed with the cause and the undo", err)
			}
			same(t, "after the failure", before, e.snapshot(t))
			j := journalOf(t, state, onlyApply(t, state))
			if j.State != apply.StateFailed || j.Error == "" || j.UndoError != "" {
				t.Errorf("journal state %s error %q undo %q", j.State, j.Error, j.UndoError)
			}
			// a failed, fully undone apply does not block the next one
			rb, err := apply.Rollback(context.Background(), "", opt)
			if err != nil || !rb.NothingToDo {
				t.Errorf("rollback after a failure: %+v %v, want nothing to do", rb, err)
			}
		})
	}
}

// TestFailingAction runs a plan whose last action the kernel refuses (a
// timeout that is not a number: EINVAL, which no check before can see):
// the actions before it are undone and verified.
func TestFailingAction(t *testing.T) {
	e := newEnv(t)
	e.plan.Steps = append(e.plan.Steps, tune.Step{Title: "a value the kernel refuses", Scope: tune.ScopeNetNS,
		Actions: []tune.Action{{Kind: tune.KindSysctl, Path: "/proc/sys/net/netfilter/nf_conntrack_icmp_timeout",
			Expect: strings.TrimSpace(e.ns.Run("cat", "/proc/sys/net/netfilter/nf_conntrack_icmp_timeout")), Value: "thirty"}}})
	before := e.snapshot(t)
	state := t.TempDir()
	_, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
	if !errors.Is(err, apply.ErrFailed) || !strings.Contains(err.Error(), "step 5") || !strings.Contains(err.Error(), "invalid argument") {
		t.Fatalf("err = %v, want step 5 failing with EINVAL", err)
	}
	if !strings.Contains(err.Error(), "undid the 8 completed actions") {
		t.Errorf("err = %v, want it to say it undid 8 actions", err)
	}
	same(t, "after the failure", before, e.snapshot(t))
}

// TestKillAtEachAction runs the apply in a child process and kills it
// with SIGKILL at each point in turn: before each action (journaled as
// started, not run), after it (run, not yet journaled as done — for the
// nft batch, after nft committed but before ctdoctor read what it
// added), and before the journal says applied. The next apply refuses,
// naming the interrupted apply and rollback; history says interrupted;
// `ctdoctor rollback` restores the namespace and the fake root exactly.
func TestKillAtEachAction(t *testing.T) {
	e := newEnv(t)
	planFile := e.writePlan(t)
	before := e.snapshot(t)
	points := []string{"end"}
	for k := range 8 {
		points = append(points, fmt.Sprintf("before:%d", k), fmt.Sprintf("after:%d", k))
	}
	for _, at := range points {
		t.Run(at, func(t *testing.T) {
			state := t.TempDir()
			c := startChild(t, "CHILD_PLAN="+planFile, "CHILD_ROOT="+e.root, "CHILD_STATE="+state, "CHILD_STOP="+at)
			c.expect(t, "STOP "+at)
			c.kill9(t)
			id := onlyApply(t, state)
			h, _ := apply.History(state)
			if h[0].State != "interrupted" {
				t.Errorf("history state %q, want interrupted", h[0].State)
			}
			_, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
			if !errors.Is(err, apply.ErrPending) || !strings.Contains(err.Error(), "ctdoctor rollback "+id) {
				t.Fatalf("next apply: %v, want ErrPending pointing to rollback %s", err, id)
			}
			out, code := runCLI(t, "rollback", "--state-dir", state)
			if code != 0 {
				t.Fatalf("ctdoctor rollback: exit %d\n%s", code, out)
			}
			t.Logf("ctdoctor rollback:\n%s", out)
			same(t, "after kill -9 at "+at+" and rollback", before, e.snapshot(t))
			if j := journalOf(t, state, id); j.State != apply.StateRolledBack {
				t.Errorf("journal state %s, want rolled-back", j.State)
			}
		})
	}
}

// TestConfirmOrRevert: an apply with a confirm window is reverted by the
// watchdog within the window plus 2 s when nobody confirms — also when
// the apply process was killed, even in the middle of the apply — and a
// confirmed one stays, its watchdog gone.
func TestConfirmOrRevert(t *testing.T) {
	e := newEnv(t)
	planFile := e.writePlan(t)
	before := e.snapshot(t)
	const window = 3 * time.Second

	// waitReverted waits for the watchdog and checks when it finished.
	waitReverted := func(t *testing.T, state, id string) {
		t.Helper()
		deadline := time.Now().Add(window + 10*time.Second)
		for {
			j := journalOf(t, state, id)
			if j.State == apply.StateReverted {
				if j.ConfirmBy == nil {
					t.Fatal("no confirm_by in the journal")
				}
				late := j.UpdatedAt.Sub(*j.ConfirmBy)
				t.Logf("reverted %v after the end of the window", late.Round(time.Millisecond))
				if late > 2*time.Second {
					t.Errorf("reverted %v after the window ended, want within 2 s", late)
				}
				if j.Watchdog != nil {
					waitGone(t, j.Watchdog.PID, 3*time.Second)
				}
				return
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(state, "applies", id, "watchdog.log"))
				t.Fatalf("not reverted (state %s); watchdog log:\n%s", j.State, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	t.Run("unconfirmed", func(t *testing.T) {
		state := t.TempDir()
		c := startChild(t, "CHILD_PLAN="+planFile, "CHILD_ROOT="+e.root, "CHILD_STATE="+state, "CHILD_CONFIRM="+window.String())
		id := c.expect(t, "APPLIED ")
		if got := strings.TrimSpace(e.ns.Run("cat", timeWaitPath)); got != "30" {
			t.Fatalf("not applied: time_wait %s", got)
		}
		_ = c.cmd.Wait() // the apply process has exited
		waitReverted(t, state, id)
		same(t, "after the revert", before, e.snapshot(t))
		log, _ := os.ReadFile(filepath.Join(state, "applies", id, "watchdog.log"))
		if !strings.Contains(string(log), "reverted and verified: 8 actions restored") {
			t.Errorf("watchdog log:\n%s", log)
		}
	})
	t.Run("apply-killed", func(t *testing.T) {
		state := t.TempDir()
		c := startChild(t, "CHILD_PLAN="+planFile, "CHILD_ROOT="+e.root, "CHILD_STATE="+state, "CHILD_CONFIRM="+window.String(), "CHILD_WAIT=1")
		id := c.expect(t, "APPLIED ")
		c.kill9(t)
		waitReverted(t, state, id)
		same(t, "after the revert", before, e.snapshot(t))
	})
	t.Run("killed-mid-apply", func(t *testing.T) {
		state := t.TempDir()
		c := startChild(t, "CHILD_PLAN="+planFile, "CHILD_ROOT="+e.root, "CHILD_STATE="+state, "CHILD_CONFIRM="+window.String(), "CHILD_STOP=after:3")
		c.expect(t, "STOP after:3")
		c.kill9(t)
		waitReverted(t, state, onlyApply(t, state))
		same(t, "after the revert", before, e.snapshot(t))
	})
	t.Run("confirmed", func(t *testing.T) {
		state := t.TempDir()
		res, err := apply.Apply(context.Background(), e.plan, func() apply.Options {
			o := e.opts(t, state)
			o.ConfirmWithin = window
			return o
		}())
		if err != nil {
			t.Fatal(err)
		}
		if res.Watchdog == nil || res.Watchdog.PID == 0 {
			t.Fatalf("no watchdog: %+v", res)
		}
		// a new apply waits for this one to be confirmed
		if _, err := apply.Apply(context.Background(), e.plan, e.opts(t, state)); !errors.Is(err, apply.ErrPending) || !strings.Contains(err.Error(), "awaits confirmation") {
			t.Errorf("apply during the window: %v, want ErrPending (awaits confirmation)", err)
		}
		out, code := runCLI(t, "apply", "--confirm", res.ID, "--state-dir", state)
		if code != 0 || !strings.Contains(out, "confirmed") {
			t.Fatalf("ctdoctor apply --confirm: exit %d\n%s", code, out)
		}
		applied := e.snapshot(t)
		waitGone(t, res.Watchdog.PID, 2*time.Second) // it sees confirmed and exits
		time.Sleep(time.Until(res.ConfirmBy.Add(2 * time.Second)))
		same(t, "confirmed, after the window", applied, e.snapshot(t))
		if j := journalOf(t, state, res.ID); j.State != apply.StateConfirmed {
			t.Errorf("journal state %s, want confirmed", j.State)
		}
		if _, err := apply.Confirm(res.ID, e.opts(t, state)); err != nil {
			t.Errorf("confirming twice: %v", err)
		}
		if _, err := apply.Rollback(context.Background(), res.ID, e.opts(t, state)); err != nil {
			t.Fatal(err)
		}
		same(t, "after rollback", before, e.snapshot(t))
	})
	t.Run("answer-no", func(t *testing.T) {
		state := t.TempDir()
		opt := e.opts(t, state)
		opt.ConfirmWithin = time.Minute
		res, err := apply.Apply(context.Background(), e.plan, opt)
		if err != nil {
			t.Fatal(err)
		}
		answers := make(chan bool, 1)
		answers <- false
		r, err := apply.WaitConfirm(context.Background(), res.ID, answers, opt)
		if err != nil || r.State != apply.StateReverted {
			t.Fatalf("WaitConfirm(no) = %+v %v, want reverted", r, err)
		}
		same(t, "after answering no", before, e.snapshot(t))
		waitGone(t, res.Watchdog.PID, 2*time.Second)
		if _, err := apply.Confirm(res.ID, opt); !errors.Is(err, apply.ErrTooLate) {
			t.Errorf("confirm after the revert: %v, want ErrTooLate", err)
		}
	})
}

// TestIdempotence: applying the same plan twice changes nothing the
// second time (it says the plan is applied); a plan whose values are all
// in place already (set by hand) is "nothing to do" without a journal;
// one value at its target and the others not is applied, that one
// skipped (and not undone by rollback).
func TestIdempotence(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot(t)
	state := t.TempDir()
	first, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	applied := e.snapshot(t)
	res, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	if !res.NothingToDo || res.AlreadyApplied != first.ID {
		t.Errorf("second apply %+v, want nothing to do, already applied as %s", res, first.ID)
	}
	same(t, "after applying twice", applied, e.snapshot(t))
	if h, _ := apply.History(state); len(h) != 1 {
		t.Errorf("the second apply made a journal: %d entries", len(h))
	}
	if _, err := apply.Rollback(context.Background(), "", e.opts(t, state)); err != nil {
		t.Fatal(err)
	}
	same(t, "after rollback", before, e.snapshot(t))

	// values only: set by hand to the proposed values
	vals := *e.plan
	vals.ID = "values-only"
	vals.Steps = []tune.Step{e.plan.Steps[0]}
	e.ns.Run("sysctl", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=30", "net.netfilter.nf_conntrack_udp_timeout=17")
	res, err = apply.Apply(context.Background(), &vals, e.opts(t, state))
	if err != nil || !res.NothingToDo || res.Skipped != 2 {
		t.Errorf("values already in place: %+v %v, want nothing to do", res, err)
	}
	// one in place, one not: the other is applied, that one left alone
	e.ns.Run("sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout="+e.udp)
	res, err = apply.Apply(context.Background(), &vals, e.opts(t, state))
	if err != nil || res.Changed != 1 || res.Skipped != 1 {
		t.Fatalf("one in place: %+v %v, want 1 changed, 1 skipped", res, err)
	}
	if _, err := apply.Rollback(context.Background(), res.ID, e.opts(t, state)); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(e.ns.Run("cat", timeWaitPath)); got != "30" {
		t.Errorf("rollback undid a value the apply had skipped: time_wait %s", got)
	}
	e.ns.Run("sysctl", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait="+e.timeWait)
	same(t, "at the end", before, e.snapshot(t))
}

// TestRefusals: a stale plan (naming every step that changed), a plan for
// another host, boot, root or namespace, global steps without --global,
// a read-only setting: each is a clear error and nothing changes, not
// even the state directory.
func TestRefusals(t *testing.T) {
	e := newEnv(t)
	e.ns.Run("sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=44")
	if err := os.WriteFile(filepath.Join(e.root, maxPath), []byte("300000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	state := filepath.Join(t.TempDir(), "state")
	try := func(t *testing.T, p *tune.Plan, opt apply.Options, target error, msgs ...string) {
		t.Helper()
		opt.StateDir = state
		_, err := apply.Apply(context.Background(), p, opt)
		if err == nil || (target != nil && !errors.Is(err, target)) {
			t.Fatalf("err = %v, want %v", err, target)
		}
		for _, m := range msgs {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("err = %v, want it to say %q", err, m)
			}
		}
		t.Logf("%v", err)
		same(t, "after a refusal", before, e.snapshot(t))
		if _, err := os.Stat(filepath.Join(state, "applies")); err == nil {
			if ents, _ := os.ReadDir(filepath.Join(state, "applies")); len(ents) > 0 {
				t.Errorf("a refused apply left a journal")
			}
		}
	}
	t.Run("stale", func(t *testing.T) {
		try(t, e.plan, e.opts(t, state), apply.ErrStale,
			"step 1 (shorten the TIME_WAIT and UDP timeouts) action 2", "nf_conntrack_udp_timeout is 44, the plan expected "+e.udp,
			"step 3 (raise the table and hash size) action 1", "nf_conntrack_max is 300000, the plan expected 262144")
	})
	fresh := func() *tune.Plan {
		p := *e.plan
		p.Steps = []tune.Step{e.plan.Steps[1]}
		return &p
	}
	t.Run("another-host", func(t *testing.T) {
		p := fresh()
		p.Host.Hostname = "web2"
		try(t, p, e.opts(t, state), apply.ErrWrongHost, `for host "web2", this is "fakehost"`)
	})
	t.Run("another-boot", func(t *testing.T) {
		p := fresh()
		p.Host.BootID = "1d7e1c77-0000-4000-8000-000000000000"
		try(t, p, e.opts(t, state), apply.ErrWrongHost, "rebooted")
	})
	t.Run("another-root", func(t *testing.T) {
		p := fresh()
		p.Host.Root = "/"
		try(t, p, e.opts(t, state), apply.ErrWrongHost, "for root /, not "+e.root)
	})
	t.Run("recreated-namespace", func(t *testing.T) {
		p := fresh()
		p.Host.NetNSInode++
		try(t, p, e.opts(t, state), apply.ErrWrongHost, "deleted and recreated")
	})
	t.Run("gone-namespace", func(t *testing.T) {
		p := fresh()
		p.Host.NetNS = "ctdtest-does-not-exist"
		try(t, p, e.opts(t, state), apply.ErrWrongHost, "does not exist")
	})
	t.Run("global-without-flag", func(t *testing.T) {
		p := *e.plan
		p.Steps = []tune.Step{e.plan.Steps[1], e.plan.Steps[3]}
		opt := e.opts(t, state)
		opt.Global = false
		try(t, &p, opt, apply.ErrScope, "step 2 (persist)", "--global")
	})
	t.Run("read-only-in-namespace", func(t *testing.T) {
		p := fresh()
		max := strings.TrimSpace(e.ns.Run("cat", maxPath))
		p.Steps = []tune.Step{{Title: "raise max in the namespace", Scope: tune.ScopeNetNS,
			Actions: []tune.Action{{Kind: tune.KindSysctl, Path: maxPath, Expect: max, Value: "1048576"}}}}
		try(t, p, e.opts(t, state), nil, "cannot be written here", "read-only")
	})
	t.Run("nft-rejects", func(t *testing.T) {
		p := fresh()
		p.Steps = []tune.Step{{Title: "a chain that is not there", Scope: tune.ScopeNetNS,
			Actions: []tune.Action{{Kind: tune.KindNft, Script: "insert rule inet filter input ct state untracked accept\n"}}}}
		try(t, p, e.opts(t, state), nil, "nft rejects the script")
	})
}

// TestConcurrentApplies: while an apply holds the lock a second one with
// no patience is refused (ErrLocked, naming the holder); one that waits
// gets the lock when the first is done and then has nothing to do.
func TestConcurrentApplies(t *testing.T) {
	e := newEnv(t)
	state := t.TempDir()
	started, release := make(chan struct{}), make(chan struct{})
	opt := e.opts(t, state)
	opt.Hook = func(hp apply.HookPoint) error {
		if hp.Phase == "before" && hp.Index == 3 {
			close(started)
			<-release
		}
		return nil
	}
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, firstErr = apply.Apply(context.Background(), e.plan, opt)
	}()
	<-started
	_, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
	if !errors.Is(err, apply.ErrLocked) || !strings.Contains(err.Error(), "apply of plan test-plan-1") {
		t.Errorf("second apply: %v, want ErrLocked naming the first", err)
	}
	if _, err := apply.Rollback(context.Background(), "", e.opts(t, state)); !errors.Is(err, apply.ErrLocked) {
		t.Errorf("rollback during an apply: %v, want ErrLocked", err)
	}
	h, _ := apply.History(state)
	if len(h) != 1 || h[0].State != "applying" {
		t.Errorf("history during the apply: %+v, want one applying (not interrupted)", h)
	}
	waiting := e.opts(t, state)
	waiting.LockWait = 30 * time.Second
	done := make(chan error, 1)
	var second *apply.Result
	go func() {
		var err error
		second, err = apply.Apply(context.Background(), e.plan, waiting)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	close(release)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if err := <-done; err != nil || !second.NothingToDo {
		t.Errorf("the waiting apply: %+v %v, want nothing to do", second, err)
	}
	if _, err := apply.Rollback(context.Background(), "", e.opts(t, state)); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackLeavesOthersAlone: rules the operator added after the apply
// (also into ctdoctor's own chain's table, in another chain) survive a
// rollback, which deletes exactly the apply's objects by handle; a value
// the operator changed since is refused (ErrDrift, nothing changed)
// unless --force.
func TestRollbackLeavesOthersAlone(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot(t)
	state := t.TempDir()
	p := *e.plan
	p.Steps = e.plan.Steps[:2]
	res, err := apply.Apply(context.Background(), &p, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	e.ns.Run("nft", "insert", "rule", "inet", "fw", "input", "tcp", "dport", "443", "accept")
	e.ns.Run("nft", "add", "table", "ip", "operator")
	e.ns.Run("sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=99")
	_, err = apply.Rollback(context.Background(), res.ID, e.opts(t, state))
	if !errors.Is(err, apply.ErrDrift) || !strings.Contains(err.Error(), "nf_conntrack_udp_timeout is 99 now; the apply set 17") {
		t.Fatalf("rollback with a changed value: %v, want ErrDrift naming it", err)
	}
	if got := strings.TrimSpace(e.ns.Run("cat", timeWaitPath)); got != "30" {
		t.Errorf("the refused rollback changed time_wait to %s", got)
	}
	opt := e.opts(t, state)
	opt.Force = true
	if _, err := apply.Rollback(context.Background(), res.ID, opt); err != nil {
		t.Fatal(err)
	}
	rs := e.ns.Run("nft", "list", "ruleset")
	if !strings.Contains(rs, "tcp dport 443 accept") || !strings.Contains(rs, "table ip operator") {
		t.Errorf("rollback removed the operator's rules:\n%s", rs)
	}
	if strings.Contains(rs, "untracked") || strings.Contains(rs, "ctdoctor_raw") {
		t.Errorf("rollback left the apply's rules:\n%s", rs)
	}
	e.ns.Run("nft", "delete", "rule", "inet", "fw", "input", "handle", handleOf(t, e, "tcp dport 443 accept"))
	e.ns.Run("nft", "delete", "table", "ip", "operator")
	same(t, "at the end", before, e.snapshot(t))
}

// handleOf finds a rule's handle in the namespace's inet fw input chain.
func handleOf(t *testing.T, e *env, rule string) string {
	t.Helper()
	for _, l := range strings.Split(e.ns.Run("nft", "-a", "list", "chain", "inet", "fw", "input"), "\n") {
		if strings.Contains(l, rule) {
			if _, h, ok := strings.Cut(l, "# handle "); ok {
				return strings.TrimSpace(h)
			}
		}
	}
	t.Fatalf("no rule %q", rule)
	return ""
}

// TestRollbackAfterOperatorAddedToOurChain: a rule the operator added to
// ctdoctor's own chain makes the undo batch fail as a whole (nft is all
// or nothing) rather than vanish with the table: rollback says so, and
// changes nothing in the ruleset.
func TestRollbackAfterOperatorAddedToOurChain(t *testing.T) {
	e := newEnv(t)
	state := t.TempDir()
	p := *e.plan
	p.Steps = e.plan.Steps[1:2]
	res, err := apply.Apply(context.Background(), &p, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	e.ns.Run("nft", "add", "rule", "inet", "ctdoctor_raw", "output", "counter")
	rs := e.ns.Run("nft", "-a", "list", "ruleset")
	_, err = apply.Rollback(context.Background(), res.ID, e.opts(t, state))
	if err == nil || !strings.Contains(err.Error(), "someone added to what the apply created since: rule in inet ctdoctor_raw output") {
		t.Fatalf("rollback: %v, want a failure that names rules added since", err)
	}
	if got := e.ns.Run("nft", "-a", "list", "ruleset"); got != rs {
		t.Errorf("the failed undo batch changed the ruleset:\n%s\nwant\n%s", got, rs)
	}
	if j := journalOf(t, state, res.ID); j.State != apply.StateRollbackFailed {
		t.Errorf("journal state %s, want rollback-failed", j.State)
	}
	// the operator removes their rule: rollback now finishes
	e.ns.Run("nft", "flush", "chain", "inet", "ctdoctor_raw", "output")
	e.ns.Run("nft", "add", "rule", "inet", "ctdoctor_raw", "output", `oif "lo" notrack`)
	_, err = apply.Rollback(context.Background(), res.ID, e.opts(t, state))
	t.Logf("after the operator re-made the rule by hand: %v", err)
	if err == nil {
		t.Error("rollback deleted a rule the apply did not add (same text, new handle)")
	}
}

// TestDryRun prints the diff and the exact operations, and changes
// nothing: no value, no rule, no state directory.
func TestDryRun(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	e := newEnv(t)
	before := e.snapshot(t)
	state := filepath.Join(t.TempDir(), "state")
	var out strings.Builder
	opt := e.opts(t, state)
	opt.DryRun, opt.Out = true, &out
	res, err := apply.Apply(context.Background(), e.plan, opt)
	if err != nil || !res.DryRun || res.Changed != 8 {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	t.Logf("dry run:\n%s", out.String())
	for _, want := range []string{
		"net.netfilter.nf_conntrack_tcp_timeout_time_wait   " + e.timeWait + " → 30",
		"/sys/module/nf_conntrack/parameters/hashsize   65536 → 524288",
		"changed (mode 0640 and owner 1234:5678 kept)",
		"      + net.netfilter.nf_conntrack_max = 524288",
		"/etc/modprobe.d/ctdoctor.conf   new file, mode 0644",
		"nft --echo --handle -f - with this batch",
		"insert rule inet fw input ct state untracked accept",
		"write \"30\\n\" to " + timeWaitPath,
		"Nothing was changed (--dry-run).",
	} {
		if !strings.Contains(out.String(), want) && !strings.Contains(strings.Join(strings.Fields(out.String()), " "), want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	for i, l := range strings.Split(out.String(), "\n") {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("dry run line %d is %d columns, wider than COLUMNS=80: %q", i+1, n, l)
		}
	}
	same(t, "after a dry run", before, e.snapshot(t))
	if _, err := os.Stat(state); err == nil {
		t.Error("a dry run created the state directory")
	}
}

// TestIptables applies an iptables rule with its inverse in the
// namespace and rolls it back: iptables-save is as before.
func TestIptables(t *testing.T) {
	e := newEnv(t)
	for _, c := range []string{"iptables", "iptables-save"} {
		if _, err := os.Stat("/usr/sbin/" + c); err != nil {
			t.Skipf("skipped: %s is not installed", c)
		}
	}
	e.ns.Run("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-p", "tcp", "--dport", "80", "-j", "ACCEPT")
	save := func() string {
		var b strings.Builder
		for _, l := range strings.Split(e.ns.Run("iptables-save"), "\n") {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	before := save()
	state := t.TempDir()
	p := *e.plan
	p.Steps = []tune.Step{{Title: "UNTRACKED accept first", Scope: tune.ScopeNetNS, Actions: []tune.Action{{
		Kind:     tune.KindIptables,
		Argv:     []string{"iptables", "-I", "INPUT", "1", "-m", "conntrack", "--ctstate", "UNTRACKED", "-j", "ACCEPT"},
		UndoArgv: []string{"iptables", "-D", "INPUT", "-m", "conntrack", "--ctstate", "UNTRACKED", "-j", "ACCEPT"},
	}}}}
	res, err := apply.Apply(context.Background(), &p, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	rules := e.ns.Run("iptables", "-S", "INPUT")
	if !strings.Contains(strings.Split(rules, "\n")[1], "UNTRACKED") {
		t.Errorf("the rule is not first:\n%s", rules)
	}
	if _, err := apply.Rollback(context.Background(), res.ID, e.opts(t, state)); err != nil {
		t.Fatal(err)
	}
	if got := save(); got != before {
		t.Errorf("iptables-save after rollback:\n%s\nwant\n%s", got, before)
	}
}

// TestNamespaceByPIDAndGone: a plan may name its namespace by a process
// (PID); when that namespace is gone by the time of the rollback, there
// is nothing left to restore in it and the files are still restored.
func TestNamespaceByPIDAndGone(t *testing.T) {
	nstest.Require(t, "nft")
	name := fmt.Sprintf("ctdtest-apply-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	})
	sleeper := exec.Command("ip", "netns", "exec", name, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	// ip netns exec execs sleep in the same process once it has switched
	var pidNS string
	for range 50 {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)); err == nil {
			if own, _ := os.Readlink("/proc/self/ns/net"); l != own {
				pidNS = l
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pidNS == "" {
		t.Fatal("the sleeper did not enter the namespace")
	}
	read := func() string {
		out, err := exec.Command("ip", "netns", "exec", name, "cat", timeWaitPath).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	cur := read()
	root, rp := rootOnlyPlan(t)
	rp.Host.NetNS = fmt.Sprint(sleeper.Process.Pid)
	rp.Steps[0].Actions[0].Expect = cur
	state := t.TempDir()
	res, err := apply.Apply(context.Background(), rp, apply.Options{Root: root, StateDir: state, Global: true, Yes: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "30" {
		t.Fatalf("time_wait in the PID's namespace = %s, want 30", got)
	}
	if own, _ := os.ReadFile(timeWaitPath); strings.TrimSpace(string(own)) == "30" && cur != "30" {
		t.Error("the test's own namespace was changed")
	}
	_ = sleeper.Process.Kill()
	_ = sleeper.Wait()
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v %s", err, out)
	}
	deleted = true
	rb, err := apply.Rollback(context.Background(), res.ID, apply.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Changed != 1 || len(rb.Notes) != 1 || !strings.Contains(rb.Notes[0], "is gone") {
		t.Errorf("rollback with the namespace gone: %+v", rb)
	}
	if b, _ := os.ReadFile(filepath.Join(root, sysctlConf)); string(b) != operatorConf {
		t.Errorf("file not restored: %q", b)
	}
}

// TestNftBatchAddingNothing: a batch whose only command adds a table
// that exists echoes nothing; it applies (nothing to record) and its
// rollback deletes nothing — not the operator's table.
func TestNftBatchAddingNothing(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot(t)
	state := t.TempDir()
	p := *e.plan
	p.Steps = []tune.Step{{Title: "a table that exists", Scope: tune.ScopeNetNS,
		Actions: []tune.Action{{Kind: tune.KindNft, Script: "add table inet fw\n"}}}}
	res, err := apply.Apply(context.Background(), &p, e.opts(t, state))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Rollback(context.Background(), res.ID, e.opts(t, state)); err != nil {
		t.Fatal(err)
	}
	same(t, "after rollback", before, e.snapshot(t))
}

// TestKillRollbackAtEachAction kills a rollback (in a child process, with
// SIGKILL) before each of its undos in turn: history says interrupted, a
// new apply is refused, and running rollback again finishes the job —
// the namespace and the fake root are exactly as before the apply.
func TestKillRollbackAtEachAction(t *testing.T) {
	e := newEnv(t)
	planFile := e.writePlan(t)
	before := e.snapshot(t)
	for k := range 8 {
		at := fmt.Sprintf("undo:%d", k)
		t.Run(at, func(t *testing.T) {
			state := t.TempDir()
			res, err := apply.Apply(context.Background(), e.plan, e.opts(t, state))
			if err != nil {
				t.Fatal(err)
			}
			c := startChild(t, "CHILD_PLAN="+planFile, "CHILD_ROOT="+e.root, "CHILD_STATE="+state, "CHILD_STOP="+at, "CHILD_ROLLBACK="+res.ID)
			c.expect(t, "STOP "+at)
			c.kill9(t)
			if h, _ := apply.History(state); h[0].State != "interrupted" {
				t.Errorf("history state %q, want interrupted", h[0].State)
			}
			if _, err := apply.Apply(context.Background(), e.plan, e.opts(t, state)); !errors.Is(err, apply.ErrPending) {
				t.Errorf("apply after an interrupted rollback: %v, want ErrPending", err)
			}
			rb, err := apply.Rollback(context.Background(), "", e.opts(t, state))
			if err != nil {
				t.Fatal(err)
			}
			if rb.Changed != 8-k {
				t.Errorf("the second rollback restored %d actions, want the %d left", rb.Changed, 8-k)
			}
			same(t, "after the resumed rollback", before, e.snapshot(t))
		})
	}
}

// hostState is the test process's own namespace's ruleset and conntrack
// settings (the host's, when the tests run in the initial namespace):
// apply must never touch them.
func hostState(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "-a", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.Write(out)
	for _, p := range []string{timeWaitPath, udpPath, maxPath, hashPath} {
		v, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s %q\n", p, v)
	}
	return b.String()
}
