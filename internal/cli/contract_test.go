package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// mainResult runs ctdoctor in-process.
func mainResult(args ...string) childResult {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return childResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// Every usage error exits 2 (the README's contract), names the problem and
// says where the usage is: bad flags, bad arguments and bad flag values,
// alone and in combination, for every command.
func TestUsageErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	listing := filepath.Join(dir, "listing.txt")
	if err := os.WriteFile(listing, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixture := fixtures + "k8s-node"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"snapshot"}, "-o FILE.tar.gz is required"},
		{[]string{"snapshot", "extra", "-o", "x.tar.gz"}, `unknown command "extra"`},
		{[]string{"version", "extra"}, `unknown command "extra"`},
		{[]string{"simulate", "a", "b"}, "accepts at most 1 arg"},
		{[]string{"simulate", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh"`},
		{[]string{"help", "bogus"}, `no help topic "bogus"`},
		// Flag values.
		{[]string{"--top", "0"}, "--top must be at least 1, not 0"},
		{[]string{"--top", "-3"}, "--top must be at least 1, not -3"},
		{[]string{"--top", "x"}, `invalid argument "x" for "--top"`},
		{[]string{"--interval", "-1s"}, "--interval must not be negative"},
		{[]string{"--interval", "soon"}, `invalid argument "soon" for "--interval"`},
		{[]string{"-o", "yaml"}, "-o must be text, json or html"},
		{[]string{"--color", "pink", "--root", fixture}, "--color must be auto, always or never"},
		// Flags that do not go together.
		{[]string{"--from", listing, "--root", fixture}, "alternatives"},
		{[]string{"--from", listing, "--netns", "x"}, "--netns applies to the live host only, not to --from"},
		{[]string{"--from", listing, "--all-netns"}, "--all-netns applies to the live host only, not to --from"},
		{[]string{"--snapshot", "x.tar.gz", "--all-netns"}, "--all-netns applies to the live host only, not to --snapshot"},
		{[]string{"--root", fixture, "--all-netns"}, "--all-netns applies to the live host only, not to --root"},
		{[]string{"--root", fixture, "--netns", "x", "--all-netns"}, "--netns and --all-netns apply to the live host only"},
		{[]string{"--root", fixture, "--interval", "2s"}, "--interval applies to the live host only"},
		{[]string{"--from", listing, "--no-entries"}, "--no-entries with --from leaves nothing to analyse"},
	} {
		r := mainResult(tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("ctdoctor %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("ctdoctor %s: a usage error printed to stdout: %q", strings.Join(tc.args, " "), r.stdout)
		}
	}

	// Every command, present and future: an unknown flag and a stray
	// argument are usage errors.
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	names := []string{""}
	for _, c := range root.Commands() {
		names = append(names, c.Name())
	}
	for _, want := range []string{"snapshot", "simulate", "version", "completion", "help"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s command among %v", want, names)
		}
	}
	for _, name := range names {
		var pre []string
		if name != "" {
			pre = []string{name}
		}
		want := 2
		if name == "check" {
			want = 3 // a monitoring plugin's bad argument is UNKNOWN (3); 2 would be CRITICAL
		}
		for _, tail := range [][]string{{"--no-such-flag"}, {"no-such-arg", "another"}} {
			args := append(slices.Clone(pre), tail...)
			if r := mainResult(args...); r.code != want {
				t.Errorf("ctdoctor %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), r.code, want, r.stderr)
			}
		}
	}

	// What is not an error: help, version, a valid combination.
	for _, args := range [][]string{{"--help"}, {"help", "simulate"}, {"snapshot", "--help"}, {"--version"}, {"version"},
		{"completion", "bash"}, {"--root", fixture, "--interval", "0", "--top", "3", "-o", "json"}} {
		if r := mainResult(args...); r.code != 0 || r.stdout == "" {
			t.Errorf("ctdoctor %s: exit %d, stdout %d bytes, stderr %q", strings.Join(args, " "), r.code, len(r.stdout), r.stderr)
		}
	}
}

// --top bounds the top tables, and --top 1 is the smallest accepted.
func TestTopOne(t *testing.T) {
	r := report(t, "--root", fixtures+"k8s-node", "--top", "1")
	if len(r.Breakdown.TopSources) != 1 || len(r.Breakdown.TopDestinations) != 1 {
		t.Errorf("--top 1: %d sources, %d destinations", len(r.Breakdown.TopSources), len(r.Breakdown.TopDestinations))
	}
}

func TestFormatVersion(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-11-20T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name, override string
		info           *debug.BuildInfo
		want           string
	}{
		{"no build info", "dev", nil, "dev"},
		{"go run, no vcs", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"go install @v1.2.0", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}}, "v1.2.0"},
		{"clone", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261120100000-0123456789ab+dirty"}, Settings: vcs},
			"v0.0.0-20261120100000-0123456789ab+dirty (commit 0123456789ab, 2026-11-20T10:00:00Z, modified)"},
		{"-ldflags wins", "1.4.0", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: vcs[:3]},
			"1.4.0 (commit 0123456789ab, 2026-11-20T10:00:00Z)"},
	} {
		if got := formatVersion(tc.override, tc.info); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A binary built from this clone names the commit it was built from; the
// -ldflags override still sets the version.
func TestVersionOfBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: builds ctdoctor twice")
	}
	for _, tool := range []string{"go", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s is not installed", tool)
		}
	}
	head := func() string {
		out, err := exec.Command("git", "-C", "../..", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Skipf("skipped: not a git clone: %v", err)
		}
		return strings.TrimSpace(string(out))[:12]
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		ldflags, want string
	}{
		{"", "ctdoctor v0.0.0-"},
		{"-X github.com/ctdoctor/ctdoctor/internal/cli.Version=9.9.9", "ctdoctor 9.9.9 (commit "},
	} {
		bin := filepath.Join(dir, "ctdoctor")
		before := head()
		build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", tc.ldflags, "-o", bin, "./cmd/ctdoctor")
		build.Dir = "../.."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		after := head() // a commit may land while it builds
		for _, args := range [][]string{{"version"}, {"--version"}} {
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			s := string(out)
			if !strings.HasPrefix(s, tc.want) || !(strings.Contains(s, "commit "+before) || strings.Contains(s, "commit "+after)) {
				t.Errorf("ctdoctor %v (ldflags %q): %q, want %q… with commit %s", args, tc.ldflags, s, tc.want, after)
			}
		}
	}
}

// completions returns what `ctdoctor __complete ARGS` offers (the values,
// without descriptions) and its directive line.
func completions(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	r := mainResult(append([]string{"__complete"}, args...)...)
	if r.code != 0 {
		t.Fatalf("__complete %v: exit %d: %s", args, r.code, r.stderr)
	}
	var vals []string
	directive := ""
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if strings.HasPrefix(l, ":") {
			directive = l
			continue
		}
		vals = append(vals, strings.SplitN(l, "\t", 2)[0])
	}
	return vals, directive
}

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"simulate", ""}, []string{"nginx-local-upstream", "nginx-local-upstream-notrack", "syn-flood", "dns-udp"}},
		{[]string{"simulate", "syn"}, []string{"syn-flood"}},
		{[]string{"simulate", "--pcap-hook", ""}, []string{"prerouting", "output"}},
		{[]string{"simulate", "-o", ""}, []string{"text", "json", "csv"}},
		{[]string{"-o", ""}, []string{"text", "json", "html"}},
		{[]string{"--color", ""}, []string{"auto", "always", "never"}},
		{[]string{"snapshot", "-o", ""}, []string{"tar.gz"}},
		{[]string{"help", "sn"}, []string{"snapshot"}},
		{[]string{""}, []string{"snapshot", "simulate", "version", "completion"}},
	} {
		got, _ := completions(t, tc.args...)
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("__complete %q: %v lacks %q", tc.args, got, w)
			}
		}
	}
	if got, _ := completions(t, "simulate", "syn"); len(got) != 1 {
		t.Errorf("simulate syn: %v, want only syn-flood", got)
	}
	// A path completes YAML files.
	if got, dir := completions(t, "simulate", "./"); !slices.Contains(got, "yaml") || dir != ":8" {
		t.Errorf("simulate ./: %v %s, want the yaml extension filter (:8)", got, dir)
	}

	// --netns completes the names in /run/netns.
	fake := t.TempDir()
	for _, n := range []string{"web1", "web2", "db"} {
		if err := os.WriteFile(filepath.Join(fake, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := netnsDir
	netnsDir = fake
	got, dir := completions(t, "--netns", "we")
	netnsDir = old
	if !slices.Equal(got, []string{"web1", "web2"}) || dir != ":4" {
		t.Errorf("--netns we: %v %s, want [web1 web2] without files (:4)", got, dir)
	}
}

// A real namespace made with `ip netns add` is offered by --netns, for the
// diagnosis and for snapshot.
func TestCompletionRealNetNS(t *testing.T) {
	ns := nstest.New(t)
	for _, args := range [][]string{{"--netns", "ctdtest-"}, {"snapshot", "--netns", "ctdtest-"}} {
		if got, _ := completions(t, args...); !slices.Contains(got, ns.Name) {
			t.Errorf("__complete %v: %v lacks %s", args, got, ns.Name)
		}
	}
}

// As an unprivileged user, a snapshot that cannot list the table is
// refused loudly (exit 1, nothing written) unless --allow-partial.
func TestSnapshotUnprivileged(t *testing.T) {
	dir := worldDir(t)
	archive := filepath.Join(dir, "x.tar.gz")
	r := runAsNobody(t, "", dir, "snapshot", "-o", archive, "--no-ruleset")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot list the table's entries") ||
		!strings.Contains(r.stderr, "CAP_NET_ADMIN") || !strings.Contains(r.stderr, "--allow-partial") {
		t.Errorf("snapshot as nobody: exit %d, stderr %q; want exit 1 naming CAP_NET_ADMIN and --allow-partial", r.code, r.stderr)
	}
	if _, err := os.Stat(archive); err == nil {
		t.Errorf("a refused snapshot was written anyway")
	}
	r = runAsNobody(t, "", dir, "snapshot", "-o", archive, "--no-ruleset", "--allow-partial")
	if r.code != 0 || !strings.Contains(r.stderr, "PARTIAL SNAPSHOT") {
		t.Errorf("snapshot --allow-partial as nobody: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(archive); err != nil {
		t.Errorf("--allow-partial wrote nothing: %v", err)
	}
}

// As an unprivileged user, --all-netns shows the caller's own namespace as
// init with its count, not as an error about entering it.
func TestAllNetNSUnprivileged(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_count"); err != nil {
		t.Skip("skipped: nf_conntrack is not loaded in this namespace")
	}
	r := runAsNobody(t, "", worldDir(t), "--all-netns", "--no-entries", "--interval", "0", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep analyze.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, r.stdout)
	}
	var found bool
	for _, n := range rep.Namespaces {
		if n.Inode == rep.Host.NetNSInode {
			found = true
			if n.Name != "init" || !n.Init || n.Error != "" || n.Count < 0 {
				t.Errorf("own namespace listed as %+v, want init with its count", n)
			}
		}
	}
	if !found || rep.Host.NetNS != "init" {
		t.Errorf("own namespace (%s, inode %d) not among %+v", rep.Host.NetNS, rep.Host.NetNSInode, rep.Namespaces)
	}
}
