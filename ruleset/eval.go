package ruleset

import "strings"

// tri is a three-valued truth: whether a rule's match holds for every
// packet of a class (yes), for none (no), or it cannot be told (maybe).
type tri int8

const (
	no tri = iota
	maybe
	yes
)

func and(a, b tri) tri { return min(a, b) }

func not(a tri) tri { return yes - a }

// class describes a set of packets by what is known of them at a hook.
// Unknown properties are zero / "" (anything).
type class struct {
	hook     Hook
	iif, oif string // "lo" or "" (unknown)
	l4proto  uint8  // 0 unknown
	nfproto  uint8  // 2 or 10, 0 unknown
	dport    int    // -1 unknown
	sport    int    // -1 unknown
	local    bool   // the destination is a local address (fib daddr type local)
	ctState  uint32 // one state bit, 0 unknown
	flags    flagSet
	desc     string // for messages: "loopback packets"
}

// flagSet is what is known of the TCP flags of a class's packets: they
// are the flag bytes b with b & mask == value, or with not, all the
// others. The zero value is any flags.
type flagSet struct {
	mask, value uint8
	not         bool
}

func (f flagSet) has(b uint8) bool { return (b&f.mask == f.value) != f.not }

var (
	// opening is a packet that opens a TCP connection: SYN without ACK,
	// RST or FIN (a Linux listener drops SYN with FIN or RST, and answers
	// SYN with ACK with a reset).
	opening = flagSet{mask: TCPSyn | TCPAck | TCPRst | TCPFin, value: TCPSyn}
	// notOpening is every TCP packet but a SYN without ACK: what a
	// reply-side NOTRACK rule takes (nft's "tcp flags & (syn | ack) !=
	// syn"; iptables' "! --syn" takes these and a few more, SYN with FIN
	// or RST, which cannot open a connection either).
	notOpening = flagSet{mask: TCPSyn | TCPAck, value: TCPSyn, not: true}
)

// eval evaluates one condition against a class.
func (c Cond) eval(k class) tri {
	r := c.evalPos(k)
	if c.Neg && c.Field != FieldCt {
		return not(r)
	}
	return r
}

func (c Cond) evalPos(k class) tri {
	switch c.Field {
	case FieldIIFName, FieldIIF:
		return matchIf(c, k.iif)
	case FieldOIFName, FieldOIF:
		return matchIf(c, k.oif)
	case FieldL4Proto:
		return matchNum(c, uint64(k.l4proto), k.l4proto != 0)
	case FieldNFProto:
		return matchNum(c, uint64(k.nfproto), k.nfproto != 0)
	case FieldDPort:
		return matchNum(c, uint64(k.dport), k.dport >= 0 && k.l4proto != 0)
	case FieldSPort:
		return matchNum(c, uint64(k.sport), k.sport >= 0 && k.l4proto != 0)
	case FieldDaddrType:
		if !k.local {
			return maybe
		}
		return matchNum(c, rtnLocal, true)
	case FieldTCPFlags:
		if k.l4proto != protoNumbers["tcp"] || len(c.Values) == 0 {
			// On another protocol the byte is something else (nft and
			// iptables match the protocol too, in a condition of its own).
			return maybe
		}
		return matchFlags(c, k.flags)
	case FieldCtState:
		if k.ctState == 0 || c.Text != "" {
			return maybe
		}
		if c.Mask != 0 {
			if k.ctState&c.Mask != 0 {
				return yes
			}
			return no
		}
		return matchNum(c, uint64(k.ctState), true)
	case FieldCt:
		// Any other conntrack key cannot be loaded for an untracked
		// packet: the rule does not match, whatever its operator.
		if k.ctState == CtUntracked {
			return no
		}
		return maybe
	}
	return maybe
}

func matchNum(c Cond, v uint64, known bool) tri {
	if !known || len(c.Values) == 0 {
		return maybe
	}
	for _, r := range c.Values {
		if v >= r.From && v <= r.To {
			return yes
		}
	}
	return no
}

// matchFlags evaluates a tcp_flags condition (without its Neg) for every
// flag byte a class's packets may carry.
func matchFlags(c Cond, f flagSet) tri {
	some, all := false, true
	for b := range 256 {
		if !f.has(uint8(b)) {
			continue
		}
		v := uint64(b)
		if c.Mask != 0 {
			v &= uint64(c.Mask)
		}
		m := false
		for _, r := range c.Values {
			if v >= r.From && v <= r.To {
				m = true
				break
			}
		}
		some, all = some || m, all && m
	}
	switch {
	case all:
		return yes
	case some:
		return maybe
	}
	return no
}

// matchIf matches an interface condition against a known name ("lo") or
// an unknown interface.
func matchIf(c Cond, name string) tri {
	if name == "" {
		return maybe
	}
	if c.Field == FieldIIF || c.Field == FieldOIF {
		if name != "lo" {
			return maybe
		}
		return matchNum(c, 1, true) // the loopback device is always ifindex 1
	}
	if len(c.Names) == 0 {
		return maybe
	}
	for _, n := range c.Names {
		if p, ok := strings.CutSuffix(n, "*"); ok && strings.HasPrefix(name, p) {
			return yes
		}
		if n == name {
			return yes
		}
	}
	return no
}

// matches evaluates all of the rule's conditions (their conjunction).
// With skipCt the conntrack conditions are left out: "could the rule apply
// to this traffic, whatever its state?".
func (r *Rule) matches(k class, skipCt bool) tri {
	res := yes
	for _, c := range r.Conds {
		if skipCt && (c.Field == FieldCtState || c.Field == FieldCt) {
			continue
		}
		res = and(res, c.eval(k))
		if res == no {
			return no
		}
	}
	return res
}

// matchesCt evaluates only the rule's conntrack conditions (yes when it
// has none).
func (r *Rule) matchesCt(k class) tri {
	res := yes
	for _, c := range r.Conds {
		if c.Field == FieldCtState || c.Field == FieldCt {
			res = and(res, c.eval(k))
		}
	}
	return res
}

// terminal says whether a verdict ends the packet's walk through the chain.
func terminal(v string) bool {
	switch v {
	case "accept", "drop", "reject", "queue", "return":
		return true
	}
	return false
}

// usesCt says whether the rule has conntrack conditions of its own.
func (r *Rule) usesCt() bool {
	if r.Stateful {
		return true
	}
	if r.VMap != nil && (r.VMap.Field == FieldCtState || r.VMap.Field == FieldCt || r.VMap.Unknown) {
		// Keyed on conntrack, or with verdicts unknown: it may jump to a
		// chain that looks at conntrack. Count it as looking itself.
		return true
	}
	for _, c := range r.Conds {
		if c.Field == FieldCtState || c.Field == FieldCt {
			return true
		}
	}
	return false
}

// jumps returns the chains the rule may jump or go to.
func (r *Rule) jumps() []string {
	switch {
	case r.Verdict == "jump" || r.Verdict == "goto":
		return []string{r.Target}
	case r.VMap != nil:
		var out []string
		for _, e := range r.VMap.Entries {
			if e.Verdict == "jump" || e.Verdict == "goto" {
				out = append(out, e.Target)
			}
		}
		return out
	}
	return nil
}

// outcome is what a walk through a chain found for a class of untracked
// packets.
type outcome int

const (
	// fallThrough: no rule decided; the packets go on (policy, or back to
	// the calling chain).
	fallThrough outcome = iota
	// decided: a rule that does not look at conntrack decides for every
	// packet of the class, or an accept of untracked packets covers it:
	// untracked packets fare as tracked ones did.
	decided
	// needsAccept: a rule that looks at conntrack may see these packets
	// before anything accepts them.
	needsAccept
)

// walker follows one class of packets through one table's chains,
// remembering what each jumped-to chain does with it (a chain reached by
// many jumps is walked once).
type walker struct {
	t      *Table
	k      class
	seen   map[string]bool // chains on the current path, to stop loops
	walked map[string]outcome
	fated  map[string]int // outcome sets
}

func newWalker(t *Table, k class) *walker {
	return &walker{t: t, k: k, seen: map[string]bool{}, walked: map[string]outcome{}, fated: map[string]int{}}
}

// walk follows a class of untracked packets through a chain. On
// needsAccept it returns the index (0-based) of the rule before which an
// accept must go; for a rule inside a jumped-to chain that is the jump.
func walk(t *Table, c *Chain, k class) (outcome, int) {
	return newWalker(t, k).walk(c)
}

func (w *walker) walk(c *Chain) (outcome, int) {
	if w.seen[c.Name] {
		return needsAccept, 0 // a loop: be safe
	}
	w.seen[c.Name] = true
	defer delete(w.seen, c.Name)
	k := w.k
	for i, r := range c.Rules {
		if r.matches(k, true) == no {
			continue
		}
		if r.Verdict == "accept" && r.matchesCt(k) == yes {
			// An accept of untracked packets: for the whole class, or
			// for some of it (the rest goes on); either way no obstacle.
			if r.matches(k, false) == yes {
				return decided, i
			}
			continue
		}
		if r.usesCt() {
			return needsAccept, i
		}
		for _, target := range r.jumps() {
			sub := w.t.Chain(target)
			if sub == nil {
				continue
			}
			o, ok := w.walked[target]
			if !ok {
				o, _ = w.walk(sub)
				w.walked[target] = o
			}
			if o == needsAccept {
				return needsAccept, i
			}
			if o == decided && r.Verdict != "vmap" && r.matches(k, true) == yes {
				return decided, i
			}
		}
		if terminal(r.Verdict) && r.matches(k, true) == yes {
			if r.Verdict == "return" {
				// Back to the calling chain (or the policy), which goes on.
				return fallThrough, i
			}
			return decided, i
		}
	}
	return fallThrough, len(c.Rules)
}

// Outcomes of a packet's walk through a chain, as a set.
const (
	outAccept  = 1 << iota
	outDrop    // drop or reject
	outReturn  // back to the calling chain
	outUnknown // queued, an extension target, a verdict map
)

// fate says whether a chain, from rule index from on, accepts (yes), drops
// (no) or may do either (maybe) the packets of a class in the given
// conntrack state: every rule that may match adds its outcome, one that
// surely matches ends the walk.
func fate(t *Table, c *Chain, k class, from int) tri {
	w := newWalker(t, k)
	set := w.fate(c, from)
	if set&outReturn != 0 { // return from a base chain: its policy
		set &^= outReturn
		set |= policyOut(c)
	}
	switch set {
	case outAccept:
		return yes
	case outDrop:
		return no
	}
	return maybe
}

func policyOut(c *Chain) int {
	if c.Policy == "drop" {
		return outDrop
	}
	return outAccept
}

func (w *walker) fate(c *Chain, from int) int {
	if w.seen[c.Name] {
		return outUnknown
	}
	w.seen[c.Name] = true
	defer delete(w.seen, c.Name)
	set := 0
	for _, r := range c.Rules[min(from, len(c.Rules)):] {
		m := r.matches(w.k, false)
		if m == no {
			continue
		}
		out, stop := 0, m == yes
		switch {
		case r.VMap != nil || r.Verdict == "queue":
			out = outUnknown
		case r.Verdict == "target":
			out, stop = outUnknown, false
		case r.Verdict == "jump" || r.Verdict == "goto":
			sub := w.t.Chain(r.Target)
			if sub == nil {
				out = outUnknown
				break
			}
			res, ok := w.fated[r.Target]
			if !ok {
				res = w.fate(sub, 0)
				w.fated[r.Target] = res
			}
			out = res
			if r.Verdict == "jump" && res&outReturn != 0 {
				// Some packets come back and go on with the next rule.
				out, stop = res&^outReturn, false
			}
		case r.Verdict == "accept":
			out = outAccept
		case r.Verdict == "drop" || r.Verdict == "reject":
			out = outDrop
		case r.Verdict == "return":
			out = outReturn
		default:
			continue // a statement only: the packet goes on
		}
		set |= out
		if stop {
			return set
		}
	}
	if !c.Base() {
		return set | outReturn
	}
	return set | policyOut(c)
}
