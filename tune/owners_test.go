package tune

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeTree creates files under root: path → content ("->target" makes a symlink).
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if len(c) > 2 && c[:2] == "->" {
			if err := os.Symlink(c[2:], full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The boot order of systemd-sysctl: names sorted across directories, /etc
// masking /usr/lib, the Debian link to /etc/sysctl.conf counted once, at the end.
func TestSysctlFilesOrder(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/usr/lib/sysctl.d/50-default.conf":    "net.netfilter.nf_conntrack_max = 1\n",
		"/usr/lib/sysctl.d/99-protect.conf":    "fs.protected_fifos = 1\n",
		"/etc/sysctl.d/50-default.conf":        "# masks the vendor file\nnet.netfilter.nf_conntrack_max = 2\n",
		"/etc/sysctl.d/10-early.conf":          "net/netfilter/nf_conntrack_max=3\n",
		"/etc/sysctl.d/99-custom.conf":         "-net.netfilter.nf_conntrack_max = 4 \n; comment\n",
		"/etc/sysctl.d/README":                 "not a conf file\n",
		"/etc/sysctl.d/99-sysctl.conf":         "->../sysctl.conf",
		"/etc/sysctl.conf":                     "net.netfilter.nf_conntrack_tcp_timeout_established=86400\n",
		"/run/sysctl.d/60-runtime.conf":        "net.netfilter.nf_conntrack_max = 5\n",
		"/usr/local/lib/sysctl.d/70-site.conf": "kernel.x = 1\n",
	})
	files, err := SysctlFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/etc/sysctl.d/10-early.conf", "/etc/sysctl.d/50-default.conf", "/run/sysctl.d/60-runtime.conf",
		"/usr/local/lib/sysctl.d/70-site.conf", "/etc/sysctl.d/99-custom.conf", "/usr/lib/sysctl.d/99-protect.conf", "/etc/sysctl.conf"}
	if !slices.Equal(files, want) {
		t.Fatalf("files:\n got %q\nwant %q", files, want)
	}
	lines, err := SysctlAssignments(root, "net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_established")
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, l := range lines {
		vals = append(vals, l.File+":"+l.Value)
	}
	wantVals := []string{"/etc/sysctl.d/10-early.conf:3", "/etc/sysctl.d/50-default.conf:2", "/run/sysctl.d/60-runtime.conf:5",
		"/etc/sysctl.d/99-custom.conf:4", "/etc/sysctl.conf:86400"}
	if !slices.Equal(vals, wantVals) {
		t.Fatalf("assignments:\n got %q\nwant %q", vals, wantVals)
	}
	w := Winner(lines)
	if got := w["net.netfilter.nf_conntrack_max"]; got.File != "/etc/sysctl.d/99-custom.conf" || got.Line != 1 {
		t.Errorf("winner = %+v, want 99-custom.conf line 1", got)
	}
}

func TestModuleOptions(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/lib/modprobe.d/10-vendor.conf":     "options nf_conntrack hashsize=1024\n",
		"/etc/modprobe.d/conntrack.conf":     "# tuned by hand\noptions nf_conntrack expect_hashsize=8 hashsize=65536 # big\noptions nf_nat x=1\n",
		"/etc/modprobe.d/zz-late.conf":       "options nf_conntrack hashsize=131072\n",
		"/etc/modprobe.conf":                 "options ip_conntrack hashsize=2080\n",
		"/usr/lib/modprobe.d/conntrack.conf": "options nf_conntrack hashsize=1\n", // masked by /etc
	})
	opts, err := ModuleOptions(root, "nf_conntrack", "hashsize")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range opts {
		got = append(got, o.File+":"+o.Value)
	}
	want := []string{"/lib/modprobe.d/10-vendor.conf:1024", "/etc/modprobe.d/conntrack.conf:65536", "/etc/modprobe.d/zz-late.conf:131072"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	legacy, _ := ModuleOptions(root, "ip_conntrack", "hashsize")
	if len(legacy) != 1 || legacy[0].Value != "2080" {
		t.Fatalf("legacy options = %+v", legacy)
	}
}

func TestReadModuleState(t *testing.T) {
	root := t.TempDir()
	if m := ReadModuleState(root, "nf_conntrack"); m.Loaded {
		t.Fatalf("absent module reported loaded: %+v", m)
	}
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "262144\n"})
	if m := ReadModuleState(root, "nf_conntrack"); !m.Loaded || !m.BuiltIn || m.ParamsRO {
		t.Fatalf("built-in module: %+v", m)
	}
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/initstate": "live\n"})
	if m := ReadModuleState(root, "nf_conntrack"); !m.Loaded || m.BuiltIn {
		t.Fatalf("loadable module: %+v", m)
	}
	if os.Geteuid() != 0 {
		os.Chmod(filepath.Join(root, "/sys/module/nf_conntrack/parameters/hashsize"), 0o444)
		if m := ReadModuleState(root, "nf_conntrack"); !m.ParamsRO {
			t.Fatalf("read-only parameter not detected: %+v", m)
		}
	}
}
