package apply_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/tune"
)

// rootOnlyPlan is a plan for the "init" namespace of a fake root: every
// action goes to files under the root, so these tests need neither root
// nor a namespace.
func rootOnlyPlan(t *testing.T) (string, *tune.Plan) {
	t.Helper()
	root := fakeRoot(t)
	tw := filepath.Join(root, timeWaitPath)
	if err := os.WriteFile(tw, []byte("120\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &tune.Plan{Schema: tune.PlanSchema, ID: "root-only", CreatedAt: time.Now().UTC(),
		Host:   tune.PlanHost{Hostname: "fakehost", NetNS: "init", Root: root},
		Global: true,
		Steps: []tune.Step{
			{Title: "time_wait", Scope: tune.ScopeNetNS, Actions: []tune.Action{{Kind: tune.KindSysctl, Path: timeWaitPath, Expect: "120", Value: "30"}}},
			{Title: "persist", Scope: tune.ScopeGlobal, Actions: []tune.Action{{Kind: tune.KindFile, Path: sysctlConf, Expect: operatorConf, Value: operatorConf + "x = 1\n"}}},
		}}
	return root, p
}

func rootOpts(root, state string) apply.Options {
	return apply.Options{Root: root, StateDir: state, Global: true, Yes: true}
}

// TestCorruptJournal: a truncated or edited journal is a clear error for
// rollback (nothing changes) and blocks new applies (it may describe
// changes not undone); history lists it as corrupt.
func TestCorruptJournal(t *testing.T) {
	root, p := rootOnlyPlan(t)
	state := t.TempDir()
	res, err := apply.Apply(context.Background(), p, rootOpts(root, state))
	if err != nil {
		t.Fatal(err)
	}
	applied := treeText(t, root)
	jp := filepath.Join(state, "applies", res.ID, "journal.json")
	good, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)*2/3], "truncated"},
		{"empty", nil, "empty file"},
		{"edited", []byte(strings.Replace(string(good), `"status": "done"`, `"status": "half"`, 1)), `unknown status "half"`},
		{"another apply's", []byte(strings.Replace(string(good), `"id": "`+res.ID, `"id": "20990101-000000-0000`, 1)), "names apply"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(jp, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := apply.Rollback(context.Background(), res.ID, rootOpts(root, state))
			if !errors.Is(err, apply.ErrCorruptJournal) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Errorf("rollback: %v, want ErrCorruptJournal saying %q and nothing was changed", err, c.want)
			}
			same(t, "after a refused rollback", applied, treeText(t, root))
			other := *p
			other.ID = "another"
			other.Steps = p.Steps[:1]
			if _, err := apply.Apply(context.Background(), &other, rootOpts(root, state)); !errors.Is(err, apply.ErrCorruptJournal) {
				t.Errorf("apply with a corrupt journal around: %v, want ErrCorruptJournal", err)
			}
			h, err := apply.History(state)
			if err != nil || len(h) != 1 || h[0].State != "corrupt" || !strings.Contains(h[0].Error, c.want) {
				t.Errorf("history %+v %v, want one corrupt entry", h, err)
			}
		})
	}
	if err := os.WriteFile(jp, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Rollback(context.Background(), res.ID, rootOpts(root, state)); err != nil {
		t.Fatalf("rollback with the journal restored: %v", err)
	}
}

// TestBadPlanChangesNothing: an invalid plan value is refused before the
// state directory is even created.
func TestBadPlanChangesNothing(t *testing.T) {
	root, p := rootOnlyPlan(t)
	before := treeText(t, root)
	state := filepath.Join(t.TempDir(), "state")
	p.Steps[0].Actions[0].Expect = ""
	if _, err := apply.Apply(context.Background(), p, rootOpts(root, state)); !errors.Is(err, apply.ErrBadPlan) {
		t.Errorf("apply: %v, want ErrBadPlan", err)
	}
	same(t, "after a bad plan", before, treeText(t, root))
	if _, err := os.Stat(state); err == nil {
		t.Error("a bad plan created the state directory")
	}
	// a truncated plan file, through ReadPlanFile
	f := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(f, []byte(`{"schema": "ctdoctor.plan/v1", "id": "x", "host": {"hostn`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := apply.ReadPlanFile(f); !errors.Is(err, apply.ErrBadPlan) || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated plan file: %v", err)
	}
}

// TestFakeRootSafety: under a fake root, a symbolic link that would lead
// out of the root (onto the real host) is refused, and firewall actions
// need a real namespace (there is none in a fake root's "init").
func TestFakeRootSafety(t *testing.T) {
	root, p := rootOnlyPlan(t)
	outside := t.TempDir()
	d := filepath.Join(root, "etc/sysctl.d")
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, d); err != nil {
		t.Fatal(err)
	}
	p.Steps[1].Actions[0] = tune.Action{Kind: tune.KindFile, Path: sysctlConf, ExpectAbsent: true, Value: "x = 1\n"}
	_, err := apply.Apply(context.Background(), p, rootOpts(root, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "symbolic link inside the root") {
		t.Errorf("apply through a symlink: %v, want a refusal", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("wrote outside the root: %v", ents)
	}

	root, p = rootOnlyPlan(t)
	p.Steps = append(p.Steps, tune.Step{Title: "nft", Scope: tune.ScopeNetNS, Actions: []tune.Action{{Kind: tune.KindNft, Script: "add table inet x\n"}}})
	_, err = apply.Apply(context.Background(), p, rootOpts(root, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "need a live network namespace") {
		t.Errorf("nft under a fake root: %v, want a refusal", err)
	}
}

// TestRootOnlyRoundTrip: the whole cycle on a fake root without
// privileges: apply, history, rollback, byte for byte.
func TestRootOnlyRoundTrip(t *testing.T) {
	root, p := rootOnlyPlan(t)
	before := treeText(t, root)
	state := t.TempDir()
	res, err := apply.Apply(context.Background(), p, rootOpts(root, state))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, timeWaitPath)); string(b) != "30\n" {
		t.Errorf("time_wait = %q", b)
	}
	if _, err := apply.Rollback(context.Background(), res.ID, rootOpts(root, state)); err != nil {
		t.Fatal(err)
	}
	same(t, "after rollback", before, treeText(t, root))
}

// TestRollbackAfterReboot: after a reboot (another boot id) the runtime
// values are what the boot set, so rollback restores only the files and
// says why it left the rest.
func TestRollbackAfterReboot(t *testing.T) {
	root, p := rootOnlyPlan(t)
	boot, _ := os.ReadFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"))
	p.Host.BootID = strings.TrimSpace(string(boot))
	state := t.TempDir()
	res, err := apply.Apply(context.Background(), p, rootOpts(root, state))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"), []byte("another-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rb, err := apply.Rollback(context.Background(), res.ID, rootOpts(root, state))
	if err != nil {
		t.Fatal(err)
	}
	if rb.Changed != 1 || len(rb.Notes) != 1 || !strings.Contains(rb.Notes[0], "rebooted") {
		t.Errorf("rollback after a reboot: %+v, want the file restored and a note on the sysctl", rb)
	}
	if b, _ := os.ReadFile(filepath.Join(root, sysctlConf)); string(b) != operatorConf {
		t.Errorf("file not restored: %q", b)
	}
}
