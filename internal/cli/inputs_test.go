package cli

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

const fixtures = "../../host/testdata/hosts/"

func TestFixtureHosts(t *testing.T) {
	for _, tc := range []struct {
		host     string
		findings map[string]string // id → severity ("" = any)
		check    func(t *testing.T, r *analyze.Report)
	}{
		{"centos5", map[string]string{"legacy-ip-conntrack": analyze.Warning, "table-full": analyze.Critical},
			func(t *testing.T, r *analyze.Report) {
				// the CentOS 5 report: 36271 entries against ip_conntrack_max 16640, slab objects of 384 bytes.
				if r.Table.Count != 36271 || r.Table.Max != 16640 || r.Table.ObjectSize != 384 || !r.Table.Legacy {
					t.Errorf("table: %+v", r.Table)
				}
				if r.Breakdown.Total != 36271 {
					t.Errorf("listed %d entries from proc/net/ip_conntrack", r.Breakdown.Total)
				}
				if r.Log.TableFullEvents < 2 || r.Log.Suppressed < 49 {
					t.Errorf("log: %+v", r.Log)
				}
				fixes := strings.Join(finding(r, "table-full").Fixes, "\n")
				if !strings.Contains(fixes, "net.ipv4.ip_conntrack_max") || !strings.Contains(fixes, "/etc/sysctl.conf") {
					t.Errorf("legacy fixes must use the ip_conntrack names and /etc/sysctl.conf:\n%s", fixes)
				}
			}},
		{"ubuntu-noproc", map[string]string{}, func(t *testing.T, r *analyze.Report) {
			if !r.Stats.Available || finding(r, "stats-unavailable") != nil {
				t.Errorf("stats should come from the netlink capture: %+v", r.Stats)
			}
			if r.Breakdown.Total != 0 || len(r.Warnings) == 0 {
				t.Errorf("no listing on this kernel: total %d warnings %v", r.Breakdown.Total, r.Warnings)
			}
		}},
		{"pre515", map[string]string{"max-buckets-ratio": analyze.Warning}, func(t *testing.T, r *analyze.Report) {
			if r.Table.Max != 4*r.Table.Buckets || r.Table.DefaultMax != 262144 || r.Table.DefaultBuckets != 65536 {
				t.Errorf("table: %+v", r.Table)
			}
		}},
		{"k8s-node", map[string]string{"kube-proxy-manages": "", "insert-failed-races": analyze.Warning}, func(t *testing.T, r *analyze.Report) {
			if !r.Host.KubeProxy || r.Breakdown.NAT == 0 || r.Table.Max != 131072 {
				t.Errorf("host %+v nat %d max %d", r.Host, r.Breakdown.NAT, r.Table.Max)
			}
			if finding(r, "table-full") != nil {
				t.Error("SNAT races must not be reported as a full table")
			}
		}},
	} {
		t.Run(tc.host, func(t *testing.T) {
			r := report(t, "--root", fixtures+tc.host)
			for id, sev := range tc.findings {
				f := finding(r, id)
				if f == nil || (sev != "" && f.Severity != sev) {
					t.Errorf("want %s (%s); findings: %+v", id, sev, r.Findings)
				}
			}
			tc.check(t, r)
			// The text report renders too.
			if out := run(t, "--root", fixtures+tc.host, "--color", "never"); !strings.Contains(out, strings.ToUpper(r.Verdict.Level)) {
				t.Errorf("text report lacks the verdict:\n%s", out)
			}
		})
	}
}

// The same table listed in every text format gives the same breakdown.
func TestFromFormatsAgree(t *testing.T) {
	ns := nstest.New(t, "conntrack")
	loadMixedTable(t, ns)
	dir := t.TempDir()
	listings := map[string]string{
		"conntrack-L":  ns.Run("conntrack", "-L"),
		"extended":     ns.Run("conntrack", "-L", "-o", "extended"),
		"proc":         ns.Run("cat", "/proc/net/nf_conntrack"),
		"conntrack-LS": ns.Run("conntrack", "-L", "-o", "save"),
	}
	var want, procJSON []byte
	for _, name := range []string{"conntrack-L", "extended", "proc", "conntrack-LS"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(listings[name]), 0o644); err != nil {
			t.Fatal(err)
		}
		r := report(t, "--from", path)
		if r.Breakdown.Total != 3000 {
			t.Fatalf("%s: %d entries", name, r.Breakdown.Total)
		}
		full, _ := json.Marshal(r.Breakdown)
		if name == "proc" {
			procJSON = full
		}
		if name == "conntrack-LS" {
			// `conntrack -L -o save` does not print marks (conntrack-tools 1.4.7).
			r.Breakdown.Marks = nil
			var ref analyze.Breakdown
			json.Unmarshal(want, &ref)
			ref.Marks = nil
			want, _ = json.Marshal(ref)
		}
		got, _ := json.Marshal(r.Breakdown)
		if want == nil {
			want = got
		} else if string(got) != string(want) {
			t.Errorf("%s breakdown differs:\n got %s\nwant %s", name, got, want)
		}
	}
	// stdin works the same.
	r, w, _ := os.Pipe()
	go func() { io.WriteString(w, listings["proc"]); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	rep := report(t, "--from", "-")
	if got, _ := json.Marshal(rep.Breakdown); string(got) != string(procJSON) {
		t.Errorf("stdin breakdown differs")
	}
}

func failing(t *testing.T, args []string, want ...string) {
	t.Helper()
	var out, errb strings.Builder
	code := Main(args, &out, &errb)
	if code == 0 {
		t.Errorf("%v: exit 0, want failure", args)
	}
	for _, w := range want {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("%v: stderr %q lacks %q", args, errb.String(), w)
		}
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.txt")
	os.WriteFile(unknown, []byte("GET / HTTP/1.1\nHost: x\n"), 0o644)
	failing(t, []string{"--from", unknown}, "line 1", "not a conntrack entry")
	failing(t, []string{"--from", filepath.Join(dir, "missing")}, "no such file")
	failing(t, []string{"--netns", "ctdoctor-no-such-ns"}, `network namespace "ctdoctor-no-such-ns" does not exist`)
	failing(t, []string{"-o", "yaml"}, "-o must be text, json or html")
	failing(t, []string{"--from", unknown, "--netns", "x"}, "--netns applies to the live host only")

	// A truncated listing: the entries before the cut are analysed and the cut is reported.
	data, err := os.ReadFile("../../conntrack/testdata/kernel-proc.txt")
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "trunc.txt")
	os.WriteFile(trunc, data[:len(data)-40], 0o644)
	r := report(t, "--from", trunc)
	if r.Breakdown.Total != 6 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "line 7: truncated entry") {
		t.Errorf("truncated: total %d warnings %v", r.Breakdown.Total, r.Warnings)
	}

	// A host without conntrack: a healthy verdict that says why.
	empty := t.TempDir()
	os.MkdirAll(filepath.Join(empty, "proc/sys/kernel"), 0o755)
	os.WriteFile(filepath.Join(empty, "proc/sys/kernel/osrelease"), []byte("6.1.0\n"), 0o644) // every host root has it
	r = report(t, "--root", empty)
	if r.Verdict.Level != analyze.Healthy || !strings.Contains(r.Verdict.Reason, "not active") {
		t.Errorf("no conntrack: %+v", r.Verdict)
	}
}

// Without root, ctdoctor still reports what it can and names what needs
// CAP_NET_ADMIN. The test binary re-runs itself as nobody.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("CTDOCTOR_UNPRIV_CHILD") == "1" {
		os.Exit(Main([]string{"-o", "json", "--interval", "0"}, os.Stdout, os.Stderr))
	}
	nstest.Require(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ctdoctor-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "ctdoctor.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestUnprivileged$")
	cmd.Env = append(os.Environ(), "CTDOCTOR_UNPRIV_CHILD=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("unprivileged run failed: %v\n%s", err, stderr.String())
	}
	var r analyze.Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	if r.Table.Max <= 0 {
		t.Errorf("the sysctls are world-readable: max %d", r.Table.Max)
	}
	warnings := strings.Join(r.Warnings, "\n")
	if !strings.Contains(warnings, "CAP_NET_ADMIN") {
		t.Errorf("warnings should say the listing needs CAP_NET_ADMIN:\n%s", warnings)
	}
}
