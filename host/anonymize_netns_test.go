package host

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestAnonymizerNetNSNames(t *testing.T) {
	a := NewAnonymizer(testKey)
	demo := a.NetNSName("demo")
	if !regexp.MustCompile(`^netns-[0-9a-f]{8}$`).MatchString(demo) {
		t.Errorf("demo → %q", demo)
	}
	if a.NetNSName("demo") != demo || a.NetNSName("Demo") == demo || a.NetNSName("demo2") == demo {
		t.Error("namespace names: not consistent or not distinct")
	}
	if NewAnonymizer([]byte("another key")).NetNSName("demo") == demo {
		t.Error("namespace names: not keyed")
	}
	for _, keep := range []string{"", "init", "self", "pid:4242", "/proc/4242/ns/net", "/proc/1/task/7/ns/net"} {
		if got := a.NetNSName(keep); got != keep {
			t.Errorf("%q → %q, want it unchanged", keep, got)
		}
	}
	if got := a.NetNSName("pid:4242 (billing-worker)"); !regexp.MustCompile(`^pid:4242 \(proc-[0-9a-f]{8}\)$`).MatchString(got) {
		t.Errorf("pid:4242 (billing-worker) → %q", got)
	}
	if got := a.NetNSPath("/run/netns/demo"); got != "/run/netns/"+demo {
		t.Errorf("/run/netns/demo → %q, want /run/netns/%s", got, demo)
	}
	if got := a.NetNSName("/var/run/docker/netns/3f2a9c1d"); !regexp.MustCompile(`^/var/run/docker/netns/netns-[0-9a-f]{8}$`).MatchString(got) {
		t.Errorf("docker path → %q", got)
	}
	if got := replaceWord("web and webhook, /run/netns/web. web", "web", "X"); got != "X and webhook, /run/netns/X. X" {
		t.Errorf("replaceWord: %q", got)
	}
}

// TestSnapshotAnonymizesNetNS: `snapshot --anonymize` leaves no namespace
// name, path or process name in the archive — not in meta.json's
// namespace, kernel-log counts, --all-netns list, errors and warnings —
// and maps each one the same way everywhere, so the anonymized snapshot
// still ties a gone namespace to the one that reused its number.
func TestSnapshotAnonymizesNetNS(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)
	snap := &Snapshot{Source: "netlink", Hostname: "web-03.acme.example", Kernel: "6.18.44", TakenAt: t0, CPUs: 2,
		NetNS:    NetNS{Name: "customer-acme", Path: "/run/netns/customer-acme", Inode: 4026532177, Created: t0},
		Settings: Settings{Count: 10, Max: 262144, Buckets: 262144, HashSize: 262144},
		Log: LogSummary{Source: "/dev/kmsg", TableFullEvents: 31,
			Lines: []LogEvent{{Module: "nf_conntrack", NetNS: 4026532177, Text: "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"}},
			ByNetNS: []NetNSCount{
				{Inode: 4026532177, Count: 21, Gone: true, ReusedBy: "customer-acme"},
				{Inode: 4026532177, Name: "customer-acme", Count: 8},
				{Inode: 4026532400, Name: "pid:4242 (billing-worker)", Count: 2},
			}},
		AllNetNS: []NetNSUsage{
			{NetNS: NetNS{Name: "init", Path: "/proc/1/ns/net", Inode: 4026531840, Init: true}, Count: 5, Max: 262144},
			{NetNS: NetNS{Name: "customer-acme", Path: "/run/netns/customer-acme", Inode: 4026532177}, Count: 10, Max: 262144},
			{NetNS: NetNS{Name: "pid:4242 (billing-worker)", Path: "/proc/4242/ns/net", Inode: 4026532400}, Count: 3, Max: 262144},
			{NetNS: NetNS{Name: "/var/run/docker/netns/3f2a9c1d", Path: "/var/run/docker/netns/3f2a9c1d"}, Count: -1, Max: 262144,
				Error: "open network namespace /var/run/docker/netns/3f2a9c1d: permission denied"},
		},
		Warnings: []string{`--all-netns: network namespace "customer-acme": setns /run/netns/customer-acme: operation not permitted`,
			"billing-worker exited while being read; peer 203.0.113.9 unreachable"},
	}
	a := NewAnonymizer(testKey)
	var buf bytes.Buffer
	if _, err := SaveSnapshot(&buf, snap, nil, SaveOptions{Version: "test", Anon: a}); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	for name, data := range files {
		for _, secret := range []string{"customer-acme", "billing-worker", "3f2a9c1d", "acme", "203.0.113.9"} {
			if strings.Contains(string(data), secret) {
				t.Errorf("%s still holds %q:\n%s", name, secret, data)
			}
		}
	}
	var m SnapshotMeta
	if err := json.Unmarshal(files["ctdoctor/meta.json"], &m); err != nil {
		t.Fatal(err)
	}
	acme := a.NetNSName("customer-acme")
	worker := a.NetNSName("pid:4242 (billing-worker)")
	if m.NetNS.Name != acme || m.NetNS.Path != "/run/netns/"+acme || m.NetNS.Inode != 4026532177 || !m.Anonymized {
		t.Errorf("netns %+v, want %s", m.NetNS, acme)
	}
	if l := m.Log.ByNetNS; l[0].ReusedBy != acme || !l[0].Gone || l[1].Name != acme || l[2].Name != worker || l[0].Label() != "gone; number since reused by "+acme {
		t.Errorf("log netns %+v", l)
	}
	if u := m.AllNetNS; u[0].Name != "init" || u[0].Path != "/proc/1/ns/net" || u[1].Name != acme || u[2].Name != worker ||
		u[2].Path != "/proc/4242/ns/net" || u[3].Name != u[3].Path || !strings.Contains(u[3].Error, u[3].Path+": permission denied") {
		t.Errorf("all netns %+v", u)
	}
	if w := m.Warnings[0]; w != `--all-netns: network namespace "`+acme+`": setns /run/netns/`+acme+`: operation not permitted` {
		t.Errorf("warning %q", w)
	}
	if w := m.Warnings[1]; !strings.HasPrefix(w, strings.TrimSuffix(strings.TrimPrefix(worker, "pid:4242 ("), ")")+" exited") {
		t.Errorf("warning %q", w)
	}
	// The snapshot is the same without --anonymize but for these.
	buf.Reset()
	if _, err := SaveSnapshot(&buf, snap, nil, SaveOptions{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readArchive(t, buf.Bytes())["ctdoctor/meta.json"]), `"name": "customer-acme"`) {
		t.Error("a plain snapshot lost the namespace name")
	}
}

func readArchive(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}
