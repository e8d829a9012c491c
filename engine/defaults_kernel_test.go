package engine_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// kernelDefaultSizing is the kernel's own rule (nf_conntrack_init_start,
// Linux 5.15 and later) for the hash table and the limit when nobody set
// the hashsize module parameter: RAM / 16 KiB / 8-byte list heads, at
// least 1024; 65536 above 1 GiB; 262144 above 4 GiB on a 64-bit kernel;
// nf_conntrack_max equal to the bucket count.
func kernelDefaultSizing(memBytes uint64) (buckets, limit int64) {
	switch {
	case memBytes > 4<<30:
		buckets = 262144
	case memBytes > 1<<30:
		buckets = 65536
	default:
		buckets = max(int64(memBytes/16384/8), 1024)
	}
	return buckets, buckets
}

// memTotal reads MemTotal from /proc/meminfo (the kernel's totalram_pages,
// the number its sizing rule uses).
func memTotal(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("/proc/meminfo: %q: %v", sc.Text(), err)
			}
			return kb * 1024
		}
	}
	t.Fatal("/proc/meminfo has no MemTotal")
	return 0
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", b, err)
	}
	return ma > major || ma == major && mi >= minor
}

// TestDefaultSettingsMatchKernel compares engine.DefaultSettings (what
// `ctdoctor simulate` runs with unless a scenario says otherwise) with the
// defaults of the running kernel: the conntrack sysctls of a network
// namespace created for the test, which nobody has tuned. Every
// per-namespace setting the engine knows must be there and equal.
//
// nf_conntrack_max and nf_conntrack_buckets are global and sized by the
// kernel from the RAM at boot (a host's administrator may have changed
// them since). The engine's defaults are what the kernel picks on a
// 64-bit host with more than 4 GiB: the test checks that claim with the
// kernel's sizing rule (kernelDefaultSizing), and checks the rule itself
// against the live kernel when this host's values are its untouched
// defaults (both equal to what the rule gives for this host's RAM).
func TestDefaultSettingsMatchKernel(t *testing.T) {
	ns := nstest.New(t)
	got := map[string]int64{}
	var missing []string
	err := ns.Do(func() error {
		for _, name := range engine.SettingNames() {
			b, err := os.ReadFile("/proc/sys/net/netfilter/" + name)
			if os.IsNotExist(err) {
				missing = append(missing, name)
				continue
			}
			if err != nil {
				return err
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			got[name] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Skip("skipped: a fresh network namespace has no net.netfilter.nf_conntrack_* sysctls (nf_conntrack is not loaded): nothing to compare with")
	}
	if len(missing) > 0 {
		t.Errorf("the engine has settings this kernel does not: %v", missing)
	}
	def := engine.DefaultSettings()
	compared := 0
	for _, name := range engine.SettingNames() {
		if name == engine.SetMax || name == engine.SetBuckets {
			continue
		}
		k, ok := got[name]
		if !ok {
			continue
		}
		compared++
		if def[name] != k {
			t.Errorf("%s: engine default %d, kernel %d", name, def[name], k)
		}
	}
	t.Logf("compared %d per-namespace settings with a fresh namespace's", compared)

	// The global sizing.
	if b, m := kernelDefaultSizing(5 << 30); def[engine.SetBuckets] != b || def[engine.SetMax] != m {
		t.Errorf("engine default buckets/max %d/%d; the kernel's rule gives %d/%d above 4 GiB",
			def[engine.SetBuckets], def[engine.SetMax], b, m)
	}
	if !kernelAtLeast(t, 5, 15) {
		t.Log("kernel older than 5.15 (nf_conntrack_max was 4 × buckets): the sizing rule is not checked against it")
		return
	}
	mem := memTotal(t)
	rb, rm := kernelDefaultSizing(mem)
	lb, lm := got[engine.SetBuckets], got[engine.SetMax]
	switch {
	case lb != rb || lm != rm:
		t.Logf("this host's buckets/max %d/%d are not the kernel's defaults for %d MiB (%d/%d): tuned, or hashsize set at boot; the live values are not compared",
			lb, lm, mem>>20, rb, rm)
	case mem <= 4<<30:
		t.Logf("this host's buckets/max %d/%d are the kernel's defaults for %d MiB; the engine's (%d/%d) are for hosts above 4 GiB",
			lb, lm, mem>>20, def[engine.SetBuckets], def[engine.SetMax])
	default:
		if def[engine.SetBuckets] != lb || def[engine.SetMax] != lm {
			t.Errorf("engine default buckets/max %d/%d, this %d MiB host's kernel %d/%d", def[engine.SetBuckets], def[engine.SetMax], mem>>20, lb, lm)
		}
		t.Logf("buckets/max: engine %d/%d, kernel %d/%d on %d MiB", def[engine.SetBuckets], def[engine.SetMax], lb, lm, mem>>20)
	}
}
