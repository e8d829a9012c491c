package analyze

import (
	"strconv"
	"strings"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// KernelVersion is a parsed kernel release ("6.18.44-fc-v669" → 6, 18, 44).
type KernelVersion struct{ Major, Minor, Patch int }

// ParseKernelVersion parses the leading numbers of a kernel release string.
// It returns the zero version when the string does not start with a number.
func ParseKernelVersion(s string) KernelVersion {
	var v [3]int
	for i := range v {
		j := 0
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == 0 {
			break
		}
		v[i], _ = strconv.Atoi(s[:j])
		s = s[j:]
		if !strings.HasPrefix(s, ".") {
			break
		}
		s = s[1:]
	}
	return KernelVersion{v[0], v[1], v[2]}
}

// AtLeast reports whether v ≥ major.minor.
func (v KernelVersion) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Known reports whether a version was parsed.
func (v KernelVersion) Known() bool { return v.Major > 0 }

// DefaultSizing returns the bucket count and nf_conntrack_max the kernel
// picks by itself for a 64-bit host with memBytes of RAM (kernel-conntrack.md §1):
// since 5.15 one bucket per 128 KiB, set to 65536 above 1 GiB and 262144
// above 4 GiB, at least 1024, max = buckets; before, 16384 above 1 GiB and
// 65536 above 4 GiB, at least 32, max = 4 × buckets.
//
// Legacy ip_conntrack kernels (RHEL/CentOS 5's 2.6.18) used 16-byte list
// heads and max = 8 × buckets, with 8192 buckets above 1 GiB — 32 entries
// per MB of RAM on x86-64 below that (seed 004's 16640 on ~520 MiB).
func DefaultSizing(v KernelVersion, memBytes uint64, legacy bool) (buckets, maxEntries int64) {
	const gib = 1 << 30
	if legacy {
		b := int64(memBytes / 16384 / 16)
		if memBytes > gib {
			b = 8192
		}
		b = max(b, 16)
		return b, 8 * b
	}
	b := int64(memBytes / 16384 / 8)
	if !v.Known() || v.AtLeast(5, 15) {
		switch {
		case memBytes > 4*gib:
			b = 262144
		case memBytes > gib:
			b = 65536
		}
		if b < 1024 {
			b = 1024
		}
		b = roundUp(b, 512)
		return b, b
	}
	switch {
	case memBytes > 4*gib:
		b = 65536
	case memBytes > gib:
		b = 16384
	}
	if b < 32 {
		b = 32
	}
	return b, 4 * b
}

func roundUp(n, m int64) int64 { return (n + m - 1) / m * m }

// slabOrDefault returns the per-entry memory to assume: the slab size if
// known, else the object size rounded to 8, else 256 (6.x on x86-64).
func slabOrDefault(slab, obj int64) int64 {
	switch {
	case slab > 0:
		return slab
	case obj > 0:
		return roundUp(obj, 8)
	}
	return 256
}

// TableMemory estimates the kernel memory for entries entries and buckets
// hash buckets: entries × per-entry size + roundup(buckets, 512) × 8.
func TableMemory(entries, buckets, perEntry int64) int64 {
	if entries < 0 {
		entries = 0
	}
	if buckets < 0 {
		buckets = 0
	}
	return entries*perEntry + roundUp(buckets, 512)*8
}

// SuggestMax proposes a table size for a peak count: twice the peak,
// rounded up to a power of two, and never below the current max.
func SuggestMax(peak, current int64) int64 {
	want := int64(65536)
	for want < 2*peak {
		want *= 2
	}
	if want < current {
		want = current
	}
	return want
}
