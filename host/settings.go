package host

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Sysctl directories, relative to the root.
const (
	nfDir     = "proc/sys/net/netfilter"
	legacyDir = "proc/sys/net/ipv4/netfilter"
)

// switchNames are the non-timeout conntrack sysctls kept in Settings.Switches.
var switchNames = []string{"tcp_loose", "tcp_be_liberal", "acct", "timestamp", "checksum", "log_invalid",
	"tcp_max_retrans", "expect_max", "tcp_ignore_invalid_rst", "events", "helper"}

// privilegeHint says what privilege a failed read needs.
func privilegeHint(err error, what string) string {
	if errors.Is(err, fs.ErrPermission) {
		return " — " + what
	}
	return ""
}

// readInt reads a file holding one integer (the first field).
func (r *reader) readInt(rel string) (int64, error) {
	b, err := r.readFile(rel)
	if err != nil {
		return -1, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1, fmt.Errorf("%s: empty", rel)
	}
	v, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", rel, err)
	}
	return v, nil
}

// readSettings fills the conntrack sysctls; it must run inside the target
// namespace. It reports whether the host has conntrack at all.
func (r *reader) readSettings(s *Settings) bool {
	modern := r.exists(nfDir+"/nf_conntrack_max") || r.exists(nfDir+"/nf_conntrack_count") ||
		r.exists("proc/sys/net/nf_conntrack_max")
	legacy := !modern && (r.exists(legacyDir+"/ip_conntrack_max") || r.exists(legacyDir+"/ip_conntrack_count") ||
		r.exists("proc/sys/net/ipv4/ip_conntrack_max"))
	s.ProcEntries = r.exists("proc/net/nf_conntrack") || r.exists("proc/net/ip_conntrack") ||
		r.exists("proc/net/nf_conntrack.gz") || r.exists("proc/net/ip_conntrack.gz")
	s.ProcStats = r.exists("proc/net/stat/nf_conntrack") || r.exists("proc/net/stat/ip_conntrack")
	if !modern && !legacy {
		return false
	}
	dir, prefix := nfDir, "nf_conntrack_"
	if legacy {
		s.Legacy = true
		dir, prefix = legacyDir, "ip_conntrack_"
	}
	get := func(dst *int64, names ...string) {
		var firstErr error
		for _, n := range names {
			v, err := r.readInt(n)
			if err == nil {
				*dst = v
				return
			}
			if firstErr == nil || (errors.Is(firstErr, fs.ErrNotExist) && !errors.Is(err, fs.ErrNotExist)) {
				firstErr = err
			}
		}
		*dst = -1
		r.warn("sysctl %s: %v%s", strings.TrimPrefix(names[0], "proc/sys/"), firstErr,
			privilegeHint(firstErr, "reading it needs root"))
	}
	if legacy {
		get(&s.Max, "proc/sys/net/ipv4/ip_conntrack_max", dir+"/ip_conntrack_max")
	} else {
		get(&s.Max, dir+"/nf_conntrack_max", "proc/sys/net/nf_conntrack_max")
	}
	get(&s.Count, dir+"/"+prefix+"count")
	// ip_conntrack_buckets appeared late in the ip_conntrack era; hashsize is the same number.
	bucketsRel := dir + "/" + prefix + "buckets"
	if v, err := r.readInt(bucketsRel); err == nil {
		s.Buckets = v
	} else if !errors.Is(err, fs.ErrNotExist) {
		r.warn("sysctl %s: %v", strings.TrimPrefix(bucketsRel, "proc/sys/"), err)
	}
	for _, mod := range []string{"nf_conntrack", "ip_conntrack"} {
		rel := "sys/module/" + mod + "/parameters/hashsize"
		v, err := r.readInt(rel)
		if err == nil {
			s.HashSize = v
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && s.Buckets < 0 {
			r.warn("%s: %v%s", rel, err, privilegeHint(err, "reading it needs root (mode 0600)"))
		}
	}
	// The parameter and the buckets sysctl are the same number (writing
	// either resizes the table), so one stands in for the other.
	if s.Buckets < 0 && s.HashSize > 0 {
		s.Buckets = s.HashSize
	}
	if s.HashSize < 0 && s.Buckets > 0 {
		s.HashSize = s.Buckets
	}
	if s.Buckets < 0 {
		r.warn("hash table size unknown: no %s and no hashsize module parameter", strings.TrimPrefix(bucketsRel, "proc/sys/"))
	}
	ents, err := os.ReadDir(r.path(dir))
	if err != nil {
		r.warn("list %s: %v", dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !strings.Contains(name, "timeout") || strings.HasPrefix(name, "frag") {
			continue // frag6_timeout is IPv6 reassembly, not an entry timeout
		}
		v, err := r.readInt(dir + "/" + e.Name())
		if err != nil {
			r.warn("sysctl %s: %v", e.Name(), err)
			continue
		}
		s.Timeouts[name] = v
	}
	for _, name := range switchNames {
		if v, err := r.readInt(dir + "/" + prefix + name); err == nil {
			s.Switches[name] = v
		}
	}
	return true
}

// readTCP fills the TCP sysctls (per namespace: run inside the target).
func (r *reader) readTCP(t *TCPSysctls) {
	for _, it := range []struct {
		dst  *int64
		name string
	}{
		{&t.KeepaliveTime, "tcp_keepalive_time"},
		{&t.KeepaliveIntvl, "tcp_keepalive_intvl"},
		{&t.KeepaliveProbes, "tcp_keepalive_probes"},
		{&t.FinTimeout, "tcp_fin_timeout"},
		{&t.TWReuse, "tcp_tw_reuse"},
		{&t.Retries2, "tcp_retries2"},
	} {
		v, err := r.readInt("proc/sys/net/ipv4/" + it.name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) || r.live {
				r.warn("sysctl net.ipv4.%s: %v", it.name, err)
			}
			v = -1
		}
		*it.dst = v
	}
	b, err := r.readFile("proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) || r.live {
			r.warn("sysctl net.ipv4.ip_local_port_range: %v", err)
		}
		return
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		r.warn("sysctl net.ipv4.ip_local_port_range: unexpected %q", strings.TrimSpace(string(b)))
		return
	}
	lo, err1 := strconv.ParseInt(f[0], 10, 64)
	hi, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		r.warn("sysctl net.ipv4.ip_local_port_range: unexpected %q", strings.TrimSpace(string(b)))
		return
	}
	t.PortRangeLow, t.PortRangeHigh = lo, hi
}

// readSystem fills what is not per network namespace: hostname, kernel,
// CPUs, memory and the conntrack slab object size.
func (r *reader) readSystem(s *Snapshot) {
	if b, err := r.readFile("proc/sys/kernel/hostname"); err == nil {
		s.Hostname = strings.TrimSpace(string(b))
	} else if r.live || !errors.Is(err, fs.ErrNotExist) {
		r.warn("hostname: %v", err)
	}
	if b, err := r.readFile("proc/sys/kernel/osrelease"); err == nil {
		s.Kernel = strings.TrimSpace(string(b))
	} else {
		r.warn("kernel release: %v", err)
	}
	s.CPUs = r.cpus()
	if s.CPUs <= 0 {
		r.warn("number of CPUs unknown: no sys/devices/system/cpu/online, proc/cpuinfo or proc/stat")
	}
	if b, err := r.readFile("proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					s.MemBytes = kb * 1024
				}
			}
		}
	}
	if s.MemBytes == 0 {
		r.warn("memory size unknown: no MemTotal in proc/meminfo")
	}
	r.readSlab(&s.Settings)
}

// cpus counts online CPUs: sys/devices/system/cpu/online ("0-3,6"), else
// proc/cpuinfo's processor lines, else proc/stat's cpuN lines.
func (r *reader) cpus() int {
	if b, err := r.readFile("sys/devices/system/cpu/online"); err == nil {
		if n, ok := parseCPUList(strings.TrimSpace(string(b))); ok {
			return n
		}
	}
	if b, err := r.readFile("proc/cpuinfo"); err == nil {
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, _, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "processor" {
				n++
			}
		}
		if n > 0 {
			return n
		}
	}
	if b, err := r.readFile("proc/stat"); err == nil {
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && len(f[0]) > 3 && strings.HasPrefix(f[0], "cpu") && isDigits(f[0][3:]) {
				n++
			}
		}
		return n
	}
	return 0
}

// parseCPUList counts the CPUs in a kernel CPU list such as "0-3,6,8-9".
func parseCPUList(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return 0, false
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, false
			}
		}
		n += b - a + 1
	}
	return n, true
}

// readSlab finds the conntrack slab object size: SLUB's sysfs files, else
// the nf_conntrack (or ip_conntrack) line of /proc/slabinfo.
func (r *reader) readSlab(s *Settings) {
	obj, err1 := r.readInt("sys/kernel/slab/nf_conntrack/object_size")
	slab, err2 := r.readInt("sys/kernel/slab/nf_conntrack/slab_size")
	if err1 == nil {
		s.ObjectSize = obj
		if err2 == nil {
			s.SlabSize = slab
		}
		return
	}
	b, err := r.readFile("proc/slabinfo")
	if err != nil {
		if !errors.Is(err1, fs.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) || r.live {
			if !errors.Is(err, fs.ErrPermission) {
				err = errors.Join(err1, err)
			}
			r.warn("conntrack slab object size unknown: %v%s", err,
				privilegeHint(err, "/sys/kernel/slab/nf_conntrack/object_size and /proc/slabinfo are readable by root only"))
		}
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !isConntrackSlab(f[0]) {
			continue
		}
		if v, err := strconv.ParseInt(f[3], 10, 64); err == nil && v > 0 {
			// slabinfo's objsize is the object's footprint with alignment.
			s.ObjectSize, s.SlabSize = v, v
			return
		}
	}
	r.warn("conntrack slab object size unknown: no nf_conntrack or ip_conntrack cache in /proc/slabinfo (merged into a generic cache?)")
}

// isConntrackSlab matches "nf_conntrack", "ip_conntrack" and the per-namespace
// caches of 2.6.3x–3.x kernels ("nf_conntrack_ffff88007b2c0000").
func isConntrackSlab(name string) bool {
	switch name {
	case "nf_conntrack", "ip_conntrack":
		return true
	}
	rest, ok := strings.CutPrefix(name, "nf_conntrack_")
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}
