package host

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/netip"
	"strings"
	"sync"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Anonymizer rewrites addresses, host names and network namespace names
// and paths ([Anonymizer.NetNSName]) for a snapshot that leaves the host
// (`ctdoctor snapshot --anonymize`). The mapping is keyed
// (HMAC-SHA256) and one-way: without the key the original addresses cannot
// be recovered or confirmed by guessing. Within one Anonymizer it is
// consistent (an address always maps to the same output) and injective
// (distinct addresses map to distinct outputs: collisions are resolved by
// probing, and the outputs handed out are remembered), so per-address
// counts, top-N lists and the NAT and loopback analyses give the same
// numbers on the anonymized snapshot as on the original.
//
// What each class of address becomes:
//
//   - unspecified, loopback (127.0.0.0/8, ::1), multicast, IPv4 link-local
//     (169.254.0.0/16) and the IPv4 broadcast address: unchanged;
//   - IPv4 private (10/8, 172.16/12, 192.168/16): into 10.0.0.0/8 (then
//     172.16.0.0/12 and 192.168.0.0/16 once 10/8 is nearly used up);
//   - every other IPv4 address: into 198.18.0.0/15 (RFC 2544 benchmarking
//     space, obviously not a real host), then 100.64.0.0/10 and 240.0.0.0/4
//     when more than about 120,000 public addresses are seen;
//   - IPv6 unique-local (fc00::/7): into fd00::/8;
//   - IPv6 link-local (fe80::/10): into fe80::/64 (the interface id, which
//     may embed a MAC address, is replaced);
//   - every other IPv6 address: into 2001:db8::/32 (documentation space);
//   - IPv4-mapped IPv6 (::ffff:a.b.c.d): the IPv4 address is mapped and
//     re-wrapped, consistently with the plain IPv4 form.
//
// So the family, loopback-ness and private/public class of every address
// are preserved. Memory grows with the number of distinct addresses seen
// (some 30 bytes per IPv4 address, 80 per IPv6 address), not with the
// number of flows.
//
// An Anonymizer is safe for concurrent use.
type Anonymizer struct {
	mu    sync.Mutex
	mac   hash.Hash
	sum   []byte
	in    [24]byte // HMAC input buffer
	v4    map[uint32]uint32
	used4 map[uint32]struct{}
	v6    map[[16]byte][16]byte
	used6 map[[16]byte]struct{}
	priv4 []pool4
	pub4  []pool4
	names map[string]string // namespace names and process names handed out
	usedN map[string]bool
}

// pool4 is a range of IPv4 outputs and how many of them are handed out.
type pool4 struct {
	base, size, used uint32
}

// HMAC domain separation bytes.
const (
	domV4   = 4
	domV6   = 6
	domHost = 'h'
	domNS   = 'n'
	domComm = 'c'
)

// NewAnonymizer returns an Anonymizer keyed with key; a nil or empty key
// is replaced by 32 random bytes, so the mapping cannot be reproduced.
func NewAnonymizer(key []byte) *Anonymizer {
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key) // never fails on supported platforms (crypto/rand crashes the program instead)
	}
	return &Anonymizer{
		mac:   hmac.New(sha256.New, key),
		sum:   make([]byte, 0, sha256.Size),
		v4:    map[uint32]uint32{},
		used4: map[uint32]struct{}{},
		v6:    map[[16]byte][16]byte{},
		used6: map[[16]byte]struct{}{},
		names: map[string]string{},
		usedN: map[string]bool{},
		priv4: []pool4{
			{base: 10 << 24, size: 1 << 24},          // 10.0.0.0/8
			{base: 172<<24 | 16<<16, size: 1 << 20},  // 172.16.0.0/12
			{base: 192<<24 | 168<<16, size: 1 << 16}, // 192.168.0.0/16
		},
		pub4: []pool4{
			{base: 198<<24 | 18<<16, size: 1 << 17}, // 198.18.0.0/15
			{base: 100<<24 | 64<<16, size: 1 << 22}, // 100.64.0.0/10
			{base: 240 << 24, size: 1<<28 - 1},      // 240.0.0.0/4 without 255.255.255.255
		},
	}
}

// hash returns 32 keyed pseudo-random bytes for the first n bytes of a.in;
// the result is valid until the next call. a.mu must be held.
func (a *Anonymizer) hash(n int) []byte {
	a.mac.Reset()
	a.mac.Write(a.in[:n])
	a.sum = a.mac.Sum(a.sum[:0])
	return a.sum
}

// Addr returns the anonymized form of addr (see [Anonymizer] for the
// classes). An invalid (zero) Addr is returned as it is.
func (a *Anonymizer) Addr(addr netip.Addr) netip.Addr {
	switch {
	case !addr.IsValid():
		return addr
	case addr.Is4():
		return a.addr4(addr)
	case addr.Is4In6():
		m := a.addr4(addr.Unmap())
		return netip.AddrFrom16(m.As16()).WithZone(addr.Zone())
	}
	return a.addr6(addr.WithZone("")).WithZone(addr.Zone())
}

// keep4 reports whether an IPv4 address stays as it is.
func keep4(addr netip.Addr) bool {
	return addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() ||
		addr.IsLinkLocalUnicast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

func (a *Anonymizer) addr4(addr netip.Addr) netip.Addr {
	if keep4(addr) {
		return addr
	}
	a4 := addr.As4()
	key := binary.BigEndian.Uint32(a4[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	out, ok := a.v4[key]
	if !ok {
		pools := a.pub4
		if addr.IsPrivate() {
			pools = a.priv4
		}
		out = a.assign4(key, pools)
		a.v4[key] = out
		a.used4[out] = struct{}{}
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], out)
	return netip.AddrFrom4(b)
}

// assign4 picks an unused output for key from the first pool that is not
// nearly full: keyed random probes first, then linear probing, which ends
// because the pool has a free address. a.mu must be held.
func (a *Anonymizer) assign4(key uint32, pools []pool4) uint32 {
	a.in[0] = domV4
	binary.BigEndian.PutUint32(a.in[1:], key)
	for pass := 0; pass < 2; pass++ {
		for i := range pools {
			p := &pools[i]
			if p.used >= p.size || (pass == 0 && uint64(p.used)*16 >= uint64(p.size)*15) {
				continue
			}
			a.in[5] = byte(i)
			var off uint32
			for probe := 0; probe < 16; probe++ {
				a.in[6] = byte(probe)
				off = uint32(binary.BigEndian.Uint64(a.hash(7)) % uint64(p.size))
				if _, taken := a.used4[p.base+off]; !taken {
					p.used++
					return p.base + off
				}
			}
			for range p.size {
				off++
				if off == p.size {
					off = 0
				}
				if _, taken := a.used4[p.base+off]; !taken {
					p.used++
					return p.base + off
				}
			}
		}
	}
	// Every pool of the class is used up (hundreds of millions of distinct
	// addresses): give up on injectivity rather than fail.
	a.in[5], a.in[6] = 0, 0
	return pools[0].base + uint32(binary.BigEndian.Uint64(a.hash(7))%uint64(pools[0].size))
}

var (
	prefixULA  = netip.MustParsePrefix("fd00::/8")
	prefixLL6  = netip.MustParsePrefix("fe80::/64")
	prefixDoc6 = netip.MustParsePrefix("2001:db8::/32")
)

func (a *Anonymizer) addr6(addr netip.Addr) netip.Addr {
	if addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() {
		return addr
	}
	key := addr.As16()
	a.mu.Lock()
	defer a.mu.Unlock()
	if out, ok := a.v6[key]; ok {
		return netip.AddrFrom16(out)
	}
	target := prefixDoc6
	switch {
	case addr.IsLinkLocalUnicast():
		target = prefixLL6
	case addr.IsPrivate():
		target = prefixULA
	}
	pfx := target.Addr().As16()
	a.in[0] = domV6
	copy(a.in[1:17], key[:])
	var out [16]byte
	// With at least 64 random bits per output a collision is all but
	// impossible; a few probes settle it if it happens.
	for probe := 0; probe < 64; probe++ {
		a.in[17] = byte(probe)
		copy(out[:], a.hash(18))
		copy(out[:target.Bits()/8], pfx[:]) // the prefixes used are byte-aligned
		if _, taken := a.used6[out]; !taken {
			break
		}
	}
	a.v6[key] = out
	a.used6[out] = struct{}{}
	return netip.AddrFrom16(out)
}

// Flow rewrites the four addresses of f. Because the mapping is a
// consistent injection, the relations between them (reply source equal to
// the original destination, and so on) are preserved, and with them the
// NAT detection.
func (a *Anonymizer) Flow(f *conntrack.Flow) {
	f.Orig.Src = a.Addr(f.Orig.Src)
	f.Orig.Dst = a.Addr(f.Orig.Dst)
	f.Reply.Src = a.Addr(f.Reply.Src)
	f.Reply.Dst = a.Addr(f.Reply.Dst)
}

// Hostname returns "host-" and 8 hex digits derived (keyed) from name,
// compared case-insensitively; "" stays "".
func (a *Anonymizer) Hostname(name string) string {
	if name == "" {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mac.Reset()
	a.mac.Write([]byte{domHost})
	a.mac.Write([]byte(strings.ToLower(name)))
	a.sum = a.mac.Sum(a.sum[:0])
	return "host-" + hex.EncodeToString(a.sum[:4])
}

// NetNSName returns the anonymized form of a network namespace's name
// (as ctdoctor names them: [NetNS.Name], the kernel log's and --all-netns'
// lists), consistent within the Anonymizer and injective:
//
//   - "", "init" and "self" stay as they are;
//   - a name from /run/netns ("demo") becomes "netns-" and 8 hex digits;
//   - "pid:N (comm)" keeps the PID and replaces the process name with
//     "proc-" and 8 hex digits;
//   - a path ("/var/run/docker/netns/3f2a…") is anonymized as [Anonymizer.NetNSPath].
func (a *Anonymizer) NetNSName(name string) string {
	switch {
	case name == "" || name == "init" || name == "self":
		return name
	case strings.HasPrefix(name, "/"):
		return a.NetNSPath(name)
	case strings.HasPrefix(name, "pid:"):
		pid, comm, ok := strings.Cut(name[len("pid:"):], " (")
		if !isDigits(pid) {
			break
		}
		if !ok || !strings.HasSuffix(comm, ")") {
			return name // "pid:N": a PID says nothing about the site
		}
		return "pid:" + pid + " (" + a.keyedName(domComm, "proc-", strings.TrimSuffix(comm, ")")) + ")"
	}
	return a.keyedName(domNS, "netns-", name)
}

// NetNSPath returns the anonymized form of a namespace file's path:
// /proc/PID/ns/net stays as it is; any other path keeps its directory and
// has its last element replaced as a namespace name, so
// "/run/netns/demo" becomes "/run/netns/" + NetNSName("demo").
func (a *Anonymizer) NetNSPath(path string) string {
	if path == "" || procNSPath(path) {
		return path
	}
	i := strings.LastIndexByte(path, '/')
	base := path[i+1:]
	if base == "" {
		return path
	}
	return path[:i+1] + a.keyedName(domNS, "netns-", base)
}

// procNSPath reports whether path is /proc/PID/ns/net (or …/task/TID/ns/net).
func procNSPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return false
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 3:
		return isDigits(parts[0]) && parts[1] == "ns" && parts[2] == "net"
	case 5:
		return isDigits(parts[0]) && parts[1] == "task" && isDigits(parts[2]) && parts[3] == "ns" && parts[4] == "net"
	}
	return false
}

// keyedName maps s to prefix and 8 keyed hex digits, remembering the
// outputs handed out so that two names never share one.
func (a *Anonymizer) keyedName(dom byte, prefix, s string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := string(dom) + s
	if out, ok := a.names[key]; ok {
		return out
	}
	var out string
	for probe := byte(0); ; probe++ {
		a.mac.Reset()
		a.mac.Write([]byte{dom, probe})
		a.mac.Write([]byte(s))
		a.sum = a.mac.Sum(a.sum[:0])
		out = prefix + hex.EncodeToString(a.sum[:4])
		if !a.usedN[out] || probe == 255 {
			break
		}
	}
	a.names[key], a.usedN[out] = out, true
	return out
}

// genericPrefixes are networks whose CIDR notation says nothing about a
// site ("10.0.0.0/8"): Text leaves a prefix inside one of them, at least
// as wide as it, unchanged.
var genericPrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("::ffff:0:0/96"),
}

// Text rewrites the IP address literals in free text (kernel log lines,
// `nft list ruleset`, iptables-save output) with [Anonymizer.Addr],
// leaving everything else, ports included, as it is.
//
// It recognizes, as whole words (not preceded or followed by a letter,
// digit, '_', '.' or ':'): IPv4 dotted quads of exactly four decimal
// octets ≤ 255, optionally followed by ":port"; IPv6 literals that
// contain "::" or exactly seven colons, made only of hex digits, colons
// and dots. Version numbers ("6.18.44"), times ("08:54:58") and MAC
// addresses (five or thirteen colons) are left alone. An expanded IPv6
// literal (39 characters, as the kernel prints them) is replaced by an
// expanded one. In CIDR notation ("203.0.113.0/24") the mapped address is
// masked to the prefix length, and prefixes that span a generic block
// ("10.0.0.0/8", "fe80::/10") are kept.
func (a *Anonymizer) Text(s string) string {
	var b strings.Builder
	done := 0 // s[:done] is in b (or unchanged, while b is empty)
	for i := 0; i < len(s); {
		if !isTokenChar(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		tok := s[i:j]
		addr, n, expanded := parseAddrToken(tok)
		if n == 0 {
			i = j
			continue
		}
		out := a.Addr(addr)
		end := i + n
		// CIDR suffix: "/" and 1-3 digits ending the word.
		if end == j && j < len(s) && s[j] == '/' {
			k := j + 1
			for k < len(s) && k-j <= 3 && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			if k > j+1 && k-j <= 4 && (k == len(s) || !isTokenChar(s[k])) {
				bits := 0
				for _, c := range s[j+1 : k] {
					bits = bits*10 + int(c-'0')
				}
				out = a.prefixAddr(addr, out, bits)
				j = k
			}
		}
		if out != addr {
			b.WriteString(s[done:i])
			if expanded {
				b.WriteString(out.StringExpanded())
			} else {
				b.WriteString(out.String())
			}
			done = end
		}
		i = j
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// prefixAddr returns what the network address addr of a CIDR of the given
// length becomes, out being its plain mapping.
func (a *Anonymizer) prefixAddr(addr, out netip.Addr, bits int) netip.Addr {
	if bits > addr.BitLen() {
		return out // not a prefix length: an address followed by some "/N"
	}
	for _, g := range genericPrefixes {
		if bits <= g.Bits() && g.Contains(addr) {
			return addr
		}
	}
	if p, err := out.Prefix(bits); err == nil {
		return p.Addr()
	}
	return out
}

// isTokenChar reports whether c can be part of a word that Text examines.
func isTokenChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		c == '_' || c == '.' || c == ':'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// parseAddrToken finds an address at the start of a word: it returns the
// address, its length in bytes (0 if the word is not an address), and
// whether it is an IPv6 address written in full.
func parseAddrToken(tok string) (netip.Addr, int, bool) {
	if strings.IndexByte(tok, ':') >= 0 {
		if addr, n, exp := parseIPv6Token(tok); n > 0 {
			return addr, n, exp
		}
	}
	n := dottedQuadLen(tok)
	if n == 0 {
		return netip.Addr{}, 0, false
	}
	// What may follow the quad inside the word: ":port", and a final '.'
	// ending a sentence. Anything else ("1.2.3.4.5", "1.2.3.4a") is not an address.
	rest := tok[n:]
	if len(rest) > 1 && rest[0] == ':' {
		k := 1
		for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
			k++
		}
		if k == 1 {
			return netip.Addr{}, 0, false
		}
		rest = rest[k:]
	}
	if rest != "" && rest != "." {
		return netip.Addr{}, 0, false
	}
	addr, err := netip.ParseAddr(tok[:n])
	if err != nil { // leading zeros
		return netip.Addr{}, 0, false
	}
	return addr, n, false
}

// dottedQuadLen returns the length of the d.d.d.d prefix of s (each part
// 1-3 digits, ≤ 255), or 0.
func dottedQuadLen(s string) int {
	i := 0
	for part := 0; part < 4; part++ {
		if part > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0
			}
			i++
		}
		v, d := 0, 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && d < 4 {
			v = v*10 + int(s[i]-'0')
			i++
			d++
		}
		if d == 0 || d > 3 || v > 255 {
			return 0
		}
	}
	return i
}

// parseIPv6Token accepts a whole word (or the word without a final '.' or
// ':') that is an IPv6 literal with "::" or exactly seven colons.
func parseIPv6Token(tok string) (netip.Addr, int, bool) {
	for _, c := range []byte(tok) {
		if !isHex(c) && c != ':' && c != '.' {
			return netip.Addr{}, 0, false
		}
	}
	cands := []string{tok}
	if last := tok[len(tok)-1]; last == '.' || last == ':' {
		cands = append(cands, tok[:len(tok)-1]) // punctuation after the address
	}
	for _, cand := range cands {
		colons := strings.Count(cand, ":")
		if !strings.Contains(cand, "::") && colons != 7 {
			continue
		}
		addr, err := netip.ParseAddr(cand)
		if err != nil || !addr.Is6() {
			continue
		}
		return addr, len(cand), colons == 7 && len(cand) == 39
	}
	return netip.Addr{}, 0, false
}

// anonymizeMeta rewrites what a snapshot's meta.json says about the host
// that could identify it: the namespace names and paths (of the namespace
// read, of the kernel log's per-namespace counts, of --all-netns), the
// addresses in the kernel log lines, and both in the warnings and errors,
// which quote names and paths.
func anonymizeMeta(m *SnapshotMeta, a *Anonymizer) {
	r := &nsRewriter{a: a}
	m.NetNS = r.netNS(m.NetNS)
	l := &m.Log
	lines := make([]LogEvent, len(l.Lines))
	for i, e := range l.Lines {
		e.Text = a.Text(e.Text)
		lines[i] = e
	}
	l.Lines = lines
	byNS := make([]NetNSCount, len(l.ByNetNS))
	for i, n := range l.ByNetNS {
		n.Name, n.ReusedBy = r.name(n.Name), r.name(n.ReusedBy)
		byNS[i] = n
	}
	l.ByNetNS = byNS
	all := make([]NetNSUsage, len(m.AllNetNS))
	for i, u := range m.AllNetNS {
		u.NetNS = r.netNS(u.NetNS)
		all[i] = u
	}
	m.AllNetNS = all
	for i := range all {
		all[i].Error = r.text(all[i].Error)
	}
	warnings := make([]string, len(m.Warnings))
	for i, w := range m.Warnings {
		warnings[i] = r.text(w)
	}
	m.Warnings = warnings
}

// nsRewriter anonymizes namespace names and paths and remembers them, to
// rewrite them in free text too.
type nsRewriter struct {
	a    *Anonymizer
	seen [][2]string // original → anonymized
}

func (r *nsRewriter) netNS(ns NetNS) NetNS {
	ns.Name = r.name(ns.Name)
	if ns.Path != "" {
		p := r.a.NetNSPath(ns.Path)
		r.seen = append(r.seen, [2]string{ns.Path, p})
		ns.Path = p
	}
	return ns
}

func (r *nsRewriter) name(n string) string {
	out := r.a.NetNSName(n)
	if out != n {
		r.seen = append(r.seen, [2]string{n, out})
		if pid, comm, ok := strings.Cut(n, " ("); ok && strings.HasPrefix(pid, "pid:") {
			// The process name alone, as errors may quote it.
			oc := strings.TrimSuffix(comm, ")")
			_, ac, _ := strings.Cut(out, " (")
			r.seen = append(r.seen, [2]string{oc, strings.TrimSuffix(ac, ")")})
		}
	}
	return out
}

// text rewrites the addresses in s, and the names and paths seen so far
// where they stand as whole words (a name "web" leaves "webhook" alone).
func (r *nsRewriter) text(s string) string {
	s = r.a.Text(s)
	// Longest first: a path before the name that ends it.
	seen := append([][2]string(nil), r.seen...)
	for i := 1; i < len(seen); i++ {
		for j := i; j > 0 && len(seen[j][0]) > len(seen[j-1][0]); j-- {
			seen[j], seen[j-1] = seen[j-1], seen[j]
		}
	}
	for _, p := range seen {
		s = replaceWord(s, p[0], p[1])
	}
	return s
}

// replaceWord replaces the occurrences of old in s that are not part of a
// longer name (next to a letter, digit, '_', '-' or '.').
func replaceWord(s, old, new string) string {
	if old == "" || old == new {
		return s
	}
	var b strings.Builder
	done := 0
	for i := 0; ; {
		j := strings.Index(s[i:], old)
		if j < 0 {
			break
		}
		start, end := i+j, i+j+len(old)
		// A '.' after the name ends a sentence unless a name character follows.
		after := end == len(s) || !isNameChar(s[end]) || (s[end] == '.' && (end+1 == len(s) || !isNameChar(s[end+1])))
		if (start == 0 || !isNameChar(s[start-1])) && after {
			b.WriteString(s[done:start])
			b.WriteString(new)
			done = end
		}
		i = start + 1
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

func isNameChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-' || c == '.'
}
