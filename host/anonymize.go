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

// Anonymizer rewrites addresses and host names for a snapshot that leaves
// the host (`ctdoctor snapshot --anonymize`). The mapping is keyed
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
