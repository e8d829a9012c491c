package cli

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/watch"
)

// top's bad flags are usage errors (exit 2) that name the problem.
func TestTopUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"top", "--interval", "10ms"}, "--interval 10ms: want at least 100ms"},
		{[]string{"top", "--interval", "soon"}, `invalid argument "soon" for "--interval"`},
		{[]string{"top", "--list-every", "500ms"}, "--list-every 500ms: want at least --interval (1s)"},
		{[]string{"top", "-o", "yaml"}, `-o must be text or json, not "yaml"`},
		{[]string{"top", "--netns", "a", "--all-netns"}, "--netns and --all-netns are alternatives"},
		{[]string{"top", "--netns", ""}, "--netns: an empty value"},
		{[]string{"top", "--sort", "size"}, `--sort must be entries, change or name, not "size"`},
		{[]string{"top", "--color", "pink"}, "--color must be auto, always or never"},
		{[]string{"top", "extra"}, `unknown command "extra"`},
	} {
		r := mainResult(tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Run 'ctdoctor top --help' for usage.") {
			t.Errorf("ctdoctor %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("ctdoctor %s: a usage error printed to stdout: %q", strings.Join(tc.args, " "), r.stdout)
		}
	}
	// A namespace that does not exist is an error of the run (exit 1), as
	// for the diagnosis.
	if r := mainResult("top", "--netns", "ctdoctor-no-such-netns", "--once"); r.code != 1 || !strings.Contains(r.stderr, "ctdoctor-no-such-netns") {
		t.Errorf("top --netns missing: exit %d, stderr %q", r.code, r.stderr)
	}
	// The help teaches with examples.
	r := mainResult("top", "--help")
	for _, want := range []string{"Examples:", "ctdoctor top --once -o json", "--all-netns", "Keys:", "NO_COLOR"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("top --help lacks %q (exit %d)", want, r.code)
		}
	}
}

// Output that is not a terminal gets one frame and the command ends: as
// text, and with -o json as the frame whose count is the kernel's.
func TestTopOnceNotATerminal(t *testing.T) {
	ns := nstest.New(t, "conntrack")
	ns.Track()
	ns.FillAssured(300)
	r := mainResult("top", "--netns", ns.Name) // no --once: stdout is a buffer
	if r.code != 0 || !strings.Contains(r.stdout, "ctdoctor top · netns "+ns.Name) || !strings.Contains(r.stdout, "300 / ") {
		t.Fatalf("top to a pipe: exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("top to a pipe wrote escape sequences:\n%q", r.stdout)
	}
	r = mainResult("top", "--netns", ns.Name, "--once", "-o", "json")
	if r.code != 0 {
		t.Fatalf("top --once -o json: exit %d, stderr %q", r.code, r.stderr)
	}
	var f watch.Frame
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("top --once -o json: %v\n%s", err, r.stdout)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		t.Errorf("more than one frame for one namespace: %v", err)
	}
	kernel, _ := strconv.ParseInt(strings.TrimSpace(ns.Run("conntrack", "-C")), 10, 64)
	if f.NetNS != ns.Name || f.Count != 300 || f.Count != kernel || f.NewPerSec < 0 || f.ListedAt.IsZero() {
		t.Errorf("frame %+v; want netns %s, count 300 (conntrack -C %d), rates and a listing", f, ns.Name, kernel)
	}
	var est int64
	for _, row := range f.ByState {
		if row.Key == "ESTABLISHED" {
			est = row.Entries
		}
	}
	if est != 300 {
		t.Errorf("ESTABLISHED %d, want the 300 entries loaded: %+v", est, f.ByState)
	}
}
