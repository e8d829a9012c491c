package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadRefusesNotHostRoot: --root on a directory that is no host's
// (empty, a source tree, /proc-less) is refused with ErrNotHostRoot and a
// message that says what was expected, instead of a report of a host with
// no kernel, no CPUs and a healthy table. Read, ReadStats and Entries all
// refuse it.
func TestReadRefusesNotHostRoot(t *testing.T) {
	empty := t.TempDir()
	procOnly := t.TempDir()
	writeFile(t, procOnly, "proc/sys/kernel/hostname", "web-03\n")
	writeFile(t, procOnly, "proc/meminfo", "MemTotal: 1024 kB\n")
	dirRelease := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dirRelease, "proc/sys/kernel/osrelease"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, root, want string
	}{
		{"empty directory", empty, "no proc directory"},
		{"source tree", "../conntrack", "no proc directory"},
		{"proc without osrelease", procOnly, "no proc/sys/kernel/osrelease"},
		{"osrelease is a directory", dirRelease, "is not a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := Read(context.Background(), Options{Root: tc.root, Log: true})
			if !errors.Is(err, ErrNotHostRoot) || snap != nil {
				t.Fatalf("Read: snap %v, err %v; want ErrNotHostRoot", snap, err)
			}
			for _, w := range []string{tc.root, tc.want, "expected a copy of a host's /proc", "proc/sys/kernel/osrelease"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := ReadStats(Options{Root: tc.root}); !errors.Is(err, ErrNotHostRoot) {
				t.Errorf("ReadStats: %v", err)
			}
			if _, err := Entries(Options{Root: tc.root}, &Snapshot{}); !errors.Is(err, ErrNotHostRoot) {
				t.Errorf("Entries: %v", err)
			}
		})
	}
}

// TestReadAcceptsHostRoots: every fixture host, a snapshot written from
// one, and a host root without conntrack (ErrNoConntrack, not
// ErrNotHostRoot) are host roots.
func TestReadAcceptsHostRoots(t *testing.T) {
	fixtures, err := filepath.Glob("testdata/hosts/*/proc")
	if err != nil || len(fixtures) < 4 {
		t.Fatalf("fixtures %v, %v", fixtures, err)
	}
	for _, p := range fixtures {
		root := filepath.Dir(p)
		s, err := Read(context.Background(), Options{Root: root, Log: true})
		if err != nil || s.Kernel == "" {
			t.Errorf("%s: %v", root, err)
			continue
		}
		snapRoot := t.TempDir()
		for rel, data := range snapshotFiles(s, nil) {
			writeFile(t, snapRoot, rel, string(data))
		}
		if _, err := Read(context.Background(), Options{Root: snapRoot}); err != nil {
			t.Errorf("snapshot of %s: %v", root, err)
		}
	}
	bare := t.TempDir()
	writeFile(t, bare, "proc/sys/kernel/osrelease", "6.1.0\n")
	if _, err := Read(context.Background(), Options{Root: bare}); !errors.Is(err, ErrNoConntrack) || errors.Is(err, ErrNotHostRoot) {
		t.Errorf("host without conntrack: %v, want ErrNoConntrack", err)
	}
}
