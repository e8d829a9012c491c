package apply

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// WatchdogOptions say how the watchdog of an apply with a confirm window
// is started. It is `ctdoctor rollback --watchdog --state-dir DIR ID`,
// detached from the apply so that it reverts even when the apply process
// or the SSH session dies.
type WatchdogOptions struct {
	// Self is the ctdoctor binary to run ("" = this process's executable).
	Self string
	// Env is added to the watchdog's environment.
	Env []string
	// Mode is "process" (a re-exec in a session of its own, setsid),
	// "systemd" (a transient unit, outside the login session's cgroup, so
	// that logind's KillUserProcesses cannot stop it), or "" / "auto":
	// systemd when systemd runs the host, else process.
	Mode string
}

// WatchdogArgs are the arguments (after the binary) that run the watchdog.
func WatchdogArgs(stateDir, id string) []string {
	return []string{"rollback", "--watchdog", "--state-dir", stateDir, id}
}

func (w *WatchdogInfo) describe() string {
	if w.Kind == "systemd" {
		return "systemd unit " + w.Unit
	}
	return fmt.Sprintf("pid %d", w.PID)
}

// startWatchdog starts the detached process that reverts j at its
// deadline unless the journal says confirmed.
func startWatchdog(stateDir string, j *Journal, wo WatchdogOptions) (*WatchdogInfo, error) {
	self := wo.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the ctdoctor binary: %w", err)
		}
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	args := WatchdogArgs(abs, j.ID)
	mode := wo.Mode
	if mode == "" || mode == "auto" {
		mode = "process"
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			if _, err := exec.LookPath("systemd-run"); err == nil {
				mode = "systemd"
			}
		}
	}
	switch mode {
	case "systemd":
		unit := "ctdoctor-revert-" + j.ID
		argv := systemdRunArgv(unit, j.ID, self, args, wo.Env)
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%v: %w: %s", argv, err, out)
		}
		return &WatchdogInfo{Kind: "systemd", Unit: unit + ".service", Log: "journalctl -u " + unit}, nil
	case "process":
		logPath := filepath.Join(applyDir(abs, j.ID), "watchdog.log")
		lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer lf.Close()
		null, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		defer null.Close()
		cmd := exec.Command(self, args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = null, lf, lf
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), wo.Env...)
		// A session of its own: no controlling terminal, so the hangup of
		// the SSH session that ran apply does not reach it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", self, err)
		}
		pid := cmd.Process.Pid
		go func() { _ = cmd.Wait() }() // reap it if this process outlives it
		return &WatchdogInfo{Kind: "process", PID: pid, Log: logPath}, nil
	}
	return nil, fmt.Errorf("watchdog mode %q: want auto, process or systemd", mode)
}

// systemdRunArgv runs the watchdog as a transient service.
func systemdRunArgv(unit, id, self string, args, env []string) []string {
	argv := []string{"systemd-run", "--unit", unit, "--description", "ctdoctor: revert apply " + id + " unless confirmed",
		"--collect", "--quiet", "--property", "Type=exec"}
	for _, e := range env {
		argv = append(argv, "--setenv", e)
	}
	return append(append(argv, self), args...)
}

// Watchdog waits for the end of apply id's confirm window and reverts it
// unless the journal says it was confirmed (or rolled back) by then; then
// it verifies, and records what it did in the journal. It returns at
// once when the apply no longer waits for confirmation.
func Watchdog(ctx context.Context, stateDir, id string, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(out, "%s %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	logf("watchdog pid %d for apply %s", os.Getpid(), id)
	for {
		j, err := readJournal(stateDir, id)
		if err != nil {
			logf("%v", err)
			return err
		}
		if j.ConfirmBy == nil {
			logf("apply %s has no confirm window: nothing to watch", id)
			return nil
		}
		if j.State != StateApplying && j.State != StateApplied {
			logf("apply %s is %s: nothing to revert", id, j.State)
			return nil
		}
		wait := time.Until(*j.ConfirmBy)
		if wait <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			logf("stopped: %v", ctx.Err())
			return ctx.Err()
		case <-time.After(min(wait, 250*time.Millisecond)):
		}
	}
	logf("not confirmed by the deadline: reverting")
	res, err := revert(context.Background(), stateDir, id, fmt.Sprintf("the watchdog (pid %d): not confirmed by the end of the window", os.Getpid()), Options{StateDir: stateDir, Out: out})
	if err != nil {
		logf("revert failed: %v", err)
		return err
	}
	if res.NothingToDo {
		logf("nothing to revert (state %s)", res.State)
		return nil
	}
	logf("reverted and verified: %d actions restored", res.Changed)
	return nil
}
