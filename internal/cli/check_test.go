package cli

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

const centos5 = "../../host/testdata/hosts/centos5"

func runCheckArgs(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(append([]string{"check"}, args...), &out, &errb)
	return code, out.String()
}

// The CentOS 5 host, 36,271 entries against a limit of 16,640: CRITICAL
// with the table-full finding, the usage and counters as perfdata.
func TestCheckFullTableIsCritical(t *testing.T) {
	code, out := runCheckArgs(t, "--root", centos5)
	first, _, _ := strings.Cut(out, "\n")
	if code != 2 || !strings.HasPrefix(first, "CONNTRACK CRITICAL - ") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// 36271 / 16640 = 217.9747 %
	for _, want := range []string{"table 217.97% full (36271 of 16640)", "table-full", " | ",
		"'entries'=36271;;;0;16640", "'usage'=217.97%;80;90;0;100", "'buckets'=2080", "'drop'=12107c", "'early_drop'=5675c", "'insert_failed'=0c"} {
		if !strings.Contains(first, want) {
			t.Errorf("status line lacks %q:\n%s", want, first)
		}
	}
	if !strings.Contains(out, "\n[CRITICAL] table-full: ") || !strings.Contains(out, "    fix: sysctl -w net.ipv4.ip_conntrack_max=") {
		t.Errorf("long output lacks the finding and its fix:\n%s", out)
	}
	if strings.Count(out, "|") != 1 {
		t.Errorf("a '|' outside the status line would start perfdata:\n%s", out)
	}
	// The thresholds are what decide: above them, and with findings off, OK.
	code, out = runCheckArgs(t, "--root", centos5, "-w", "300", "-c", "400", "--findings", "none")
	if code != 0 || !strings.HasPrefix(out, "CONNTRACK OK - ") || !strings.Contains(out, "'usage'=217.97%;300;400;0;100") {
		t.Errorf("-w 300 -c 400 --findings none: exit %d\n%s", code, out)
	}
	code, out = runCheckArgs(t, "--root", centos5, "-w", "200", "-c", "400", "--findings", "none")
	if code != 1 || !strings.HasPrefix(out, "CONNTRACK WARNING - ") {
		t.Errorf("-w 200 -c 400: exit %d\n%s", code, out)
	}
	code, out = runCheckArgs(t, "--root", centos5, "-w", "@200:300", "-c", "~:1000", "--findings", "none")
	if code != 1 {
		t.Errorf("-w @200:300 (inside alerts): exit %d\n%s", code, out)
	}
}

// Rates come from the state file: 600 more drops than a run 60 s ago is
// 10 drops/s, CRITICAL at the default --drop-critical 0; the state file
// then holds this run's counters. A counter that went back gives no rate.
func TestCheckRatesFromTheStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	var wrote time.Time
	write := func(drop uint64, ago time.Duration) {
		wrote = time.Now().Add(-ago)
		b, _ := json.Marshal(checkState{At: wrote, NetNS: "init",
			Counters: map[string]uint64{"drop": drop, "early_drop": 5675, "insert_failed": 0}})
		if err := os.WriteFile(state, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"--root", centos5, "--state-file", state, "-w", "300", "-c", "400", "--findings", "none"}
	write(12107-600, 60*time.Second)
	code, out := runCheckArgs(t, args...)
	if code != 2 || !strings.HasPrefix(out, "CONNTRACK CRITICAL - drop ") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	m := regexp.MustCompile(`'drop_per_second'=([0-9.]+);;0;0`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no drop_per_second perfdata:\n%s", out)
	}
	if !strings.Contains(out, "'early_drop_per_second'=0;0;;0") {
		t.Errorf("early_drop rate:\n%s", out)
	}
	s, err := readCheckState(state)
	if err != nil || s.Counters["drop"] != 12107 || time.Since(s.At) > time.Minute {
		t.Fatalf("state after the run: %+v, %v", s, err)
	}
	// 600 drops over the time between the two runs' reports (a little over 60 s).
	want := 600 / s.At.Sub(wrote).Seconds()
	if r, _ := strconv.ParseFloat(m[1], 64); math.Abs(r-want) > 0.006 || want > 10 || want < 9 {
		t.Errorf("drop rate %v, want 600 / %.3f s = %.3f", r, s.At.Sub(wrote).Seconds(), want)
	}
	// The same counters again: no drops since, OK.
	code, out = runCheckArgs(t, args...)
	if code != 0 {
		t.Errorf("second run: exit %d\n%s", code, out)
	}
	// A counter that went back (a reboot): no rate this run.
	write(99999, 60*time.Second)
	code, out = runCheckArgs(t, args...)
	if code != 0 || !strings.Contains(out, "drop went back from 99999 to 12107") || strings.Contains(out, "'drop_per_second'") {
		t.Errorf("counter reset: exit %d\n%s", code, out)
	}
}

// A host without connection tracking is OK, or UNKNOWN when asked.
func TestCheckNoConntrack(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc/sys/kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/sys/kernel/osrelease"), []byte("6.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runCheckArgs(t, "--root", root)
	if code != 0 || !strings.HasPrefix(out, "CONNTRACK OK - connection tracking is not active") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out = runCheckArgs(t, "--root", root, "--no-conntrack", "unknown")
	if code != 3 || !strings.HasPrefix(out, "CONNTRACK UNKNOWN - ") {
		t.Errorf("--no-conntrack unknown: exit %d\n%s", code, out)
	}
}

// Bad arguments and errors are UNKNOWN (exit 3), said on stdout.
func TestCheckBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"-w", "abc"}, {"-c", "10:5"}, {"--drop-critical", "x"}, {"--findings", "all"},
		{"--no-conntrack", "maybe"}, {"extra"}, {"--bogus"}, {"--root", "/nonexistent-ctdoctor-root"},
	} {
		code, out := runCheckArgs(t, args...)
		if code != 3 || !strings.HasPrefix(out, "CONNTRACK UNKNOWN - ") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
	code, out := runCheckArgs(t, "--help")
	if code != 0 || !strings.Contains(out, "monitoring plugin") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

// A healthy namespace with a little real traffic is OK.
func TestCheckHealthyNamespace(t *testing.T) {
	n := nstest.New(t, "nft", "ping")
	n.Track()
	n.Run("ping", "-c", "2", "-i", "0.2", "127.0.0.1")
	code, out := runCheckArgs(t, "--netns", n.Name, "--state-file", filepath.Join(t.TempDir(), "s.json"))
	if code != 0 || !strings.HasPrefix(out, "CONNTRACK OK - ") || !strings.Contains(out, "'usage'=0%;80;90;0;100") {
		t.Errorf("exit %d\n%s", code, out)
	}
}
