package ruleset

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxSaveLine bounds one line of iptables-save text.
const maxSaveLine = 1 << 20

// iptables' built-in chains: their hooks, and each table's chain type and
// priority (as iptables-nft registers them, and legacy's NF_IP_PRI_*).
var (
	iptHooks = map[string]Hook{"PREROUTING": HookPrerouting, "INPUT": HookInput, "FORWARD": HookForward,
		"OUTPUT": HookOutput, "POSTROUTING": HookPostrouting}
	iptPriority = map[string]int{"raw": PriorityRaw, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
)

// ParseSave parses the output of iptables-save or ip6tables-save (either
// backend: give the one it came from, and the family, "ip" or "ip6").
// Counters ([N:M]), comments and empty lines are accepted; anything else
// that is not a table, chain, rule or COMMIT line is an error naming the
// line. A table without its COMMIT (a truncated file) is an error.
func ParseSave(r io.Reader, b Backend, fam Family) ([]*Table, error) {
	if fam != "ip" && fam != "ip6" {
		return nil, fmt.Errorf("iptables-save text: family %q: want ip or ip6", fam)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxSaveLine)
	var (
		tables []*Table
		cur    *Table
		n      int
	)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		errf := func(format string, a ...any) error {
			return fmt.Errorf("iptables-save text line %d: %s", n, fmt.Sprintf(format, a...))
		}
		switch {
		case line[0] == '*':
			if cur != nil {
				return nil, errf("table %s starts before table %s's COMMIT", line[1:], cur.Name)
			}
			name := line[1:]
			if name == "" || strings.ContainsAny(name, " \t") {
				return nil, errf("bad table name %q", name)
			}
			for _, t := range tables {
				if t.Name == name {
					return nil, errf("table %s appears twice", name)
				}
			}
			cur = &Table{Backend: b, Family: fam, Name: name}
		case line == "COMMIT":
			if cur == nil {
				return nil, errf("COMMIT outside a table")
			}
			resolveTargets(cur)
			tables = append(tables, cur)
			cur = nil
		case line[0] == ':':
			if cur == nil {
				return nil, errf("chain outside a table")
			}
			c, err := parseChainLine(cur.Name, line[1:])
			if err != nil {
				return nil, errf("%v", err)
			}
			if cur.Chain(c.Name) != nil {
				return nil, errf("chain %s declared twice", c.Name)
			}
			cur.Chains = append(cur.Chains, c)
		default:
			if cur == nil {
				return nil, errf("rule outside a table")
			}
			if err := parseRuleLine(cur, line); err != nil {
				return nil, errf("%v", err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("iptables-save text line %d: longer than %d bytes", n+1, maxSaveLine)
		}
		return nil, fmt.Errorf("iptables-save text: %w", err)
	}
	if cur != nil {
		return nil, fmt.Errorf("iptables-save text: table %s has no COMMIT (truncated?)", cur.Name)
	}
	return tables, nil
}

// parseChainLine parses "INPUT DROP [0:0]" or "MYCHAIN - [0:0]".
func parseChainLine(table, s string) (*Chain, error) {
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > 3 {
		return nil, fmt.Errorf("bad chain line %q", ":"+s)
	}
	c := &Chain{Name: f[0]}
	switch f[1] {
	case "-":
		// A user chain.
	case "ACCEPT", "DROP":
		h, ok := iptHooks[c.Name]
		if !ok {
			return nil, fmt.Errorf("chain %s has a policy but is not a built-in chain", c.Name)
		}
		c.Hook, c.Policy = h, strings.ToLower(f[1])
		c.Priority = iptPriority[table]
		c.Type = "filter"
		switch {
		case table == "nat":
			c.Type = "nat"
			if h == HookPostrouting || h == HookInput {
				c.Priority = 100
			}
		case table == "mangle" && h == HookOutput:
			c.Type = "route"
		}
	default:
		return nil, fmt.Errorf("chain %s: bad policy %q", c.Name, f[1])
	}
	if len(f) == 3 && !isCounter(f[2]) {
		return nil, fmt.Errorf("chain %s: bad counters %q", c.Name, f[2])
	}
	return c, nil
}

func isCounter(s string) bool {
	in, ok := strings.CutPrefix(s, "[")
	if !ok {
		return false
	}
	in, ok = strings.CutSuffix(in, "]")
	if !ok {
		return false
	}
	a, b, ok := strings.Cut(in, ":")
	_, e1 := strconv.ParseUint(a, 10, 64)
	_, e2 := strconv.ParseUint(b, 10, 64)
	return ok && e1 == nil && e2 == nil
}

// splitSaveArgs splits a rule line as iptables-save quotes it: words
// separated by spaces; "…" groups a word, with \" and \\ escapes.
func splitSaveArgs(s string) ([]string, error) {
	var (
		args []string
		cur  strings.Builder
		in   bool // inside a word
		q    bool // inside quotes
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q && c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\'):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			q, in = !q, true
		case !q && (c == ' ' || c == '\t'):
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if q {
		return nil, errors.New("unterminated quote")
	}
	if in {
		args = append(args, cur.String())
	}
	return args, nil
}

// parseRuleLine parses "-A CHAIN …" (optionally after "[N:M] ").
func parseRuleLine(t *Table, line string) error {
	args, err := splitSaveArgs(line)
	if err != nil {
		return err
	}
	if len(args) > 0 && isCounter(args[0]) {
		args = args[1:]
	}
	if len(args) < 2 || args[0] != "-A" {
		return fmt.Errorf("not a table, chain, rule or COMMIT line: %q", line)
	}
	c := t.Chain(args[1])
	if c == nil {
		return fmt.Errorf("rule for chain %s, which is not declared", args[1])
	}
	r := &Rule{Index: len(c.Rules) + 1, Text: strings.Join(args, " ")}
	if err := parseRuleArgs(r, args[2:]); err != nil {
		return fmt.Errorf("chain %s rule %d: %w", c.Name, r.Index, err)
	}
	c.Rules = append(c.Rules, r)
	return nil
}

// resolveTargets turns jumps to names that are not chains of the table
// into extension targets (-j SYNPROXY, -j HMARK, …): verdict "target", which
// the planner treats as "may end the packet's walk, or not".
func resolveTargets(t *Table) {
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if (r.Verdict == "jump" || r.Verdict == "goto") && t.Chain(r.Target) == nil {
				r.Verdict = "target"
			}
		}
	}
}

// argReader walks a rule's arguments.
type argReader struct {
	args []string
	i    int
}

func (a *argReader) more() bool { return a.i < len(a.args) }

func (a *argReader) next() string {
	s := a.args[a.i]
	a.i++
	return s
}

// value returns the next argument, which must exist and not be an option.
func (a *argReader) value(opt string) (string, error) {
	if !a.more() {
		return "", fmt.Errorf("%s needs a value", opt)
	}
	return a.next(), nil
}

// negValue is value for options whose old form put "!" after the option
// ("-i ! lo"): it flips *neg and returns the value after it.
func (a *argReader) negValue(opt string, neg *bool) (string, error) {
	v, err := a.value(opt)
	if err == nil && v == "!" {
		*neg = !*neg
		v, err = a.value(opt)
	}
	return v, err
}

// optArgs returns the arguments of an option of a match or target up to
// the next option.
func (a *argReader) optArgs() []string {
	var out []string
	// Old iptables-save printed the negation after the option:
	// "--dport ! 80".
	if a.i+1 < len(a.args) && a.args[a.i] == "!" && !isOption(a.args[a.i+1]) {
		out = append(out, a.args[a.i], a.args[a.i+1])
		a.i += 2
	}
	for a.more() {
		s := a.args[a.i]
		if s == "!" || isOption(s) {
			break
		}
		out = append(out, s)
		a.i++
	}
	return out
}

func isOption(s string) bool { return strings.HasPrefix(s, "-") && len(s) > 1 && !isNumber(s) }

func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// parseRuleArgs decodes the options of one rule.
func parseRuleArgs(r *Rule, args []string) error {
	a := &argReader{args: args}
	match := ""  // the current -m module
	target := "" // set once -j/-g is seen
	neg := false
	for a.more() {
		opt := a.next()
		if opt == "!" {
			neg = true
			continue
		}
		if !strings.HasPrefix(opt, "-") {
			return fmt.Errorf("unexpected %q", opt)
		}
		var err error
		switch {
		case opt == "-m" || opt == "--match":
			if match, err = a.value(opt); err != nil {
				return err
			}
			if xtStateful[match] && match != "state" && match != "conntrack" {
				r.Stateful = true
				r.Conds = append(r.Conds, Cond{Field: FieldCt, Text: "-m " + match})
			}
		case opt == "-j" || opt == "--jump" || opt == "-g" || opt == "--goto":
			if target, err = a.value(opt); err != nil {
				return err
			}
			match = ""
			setIptTarget(r, target, opt == "-g" || opt == "--goto")
		case target != "":
			if err := parseTargetOpt(r, target, opt, a.optArgs()); err != nil {
				return err
			}
		case opt == "-i" || opt == "--in-interface" || opt == "-o" || opt == "--out-interface":
			v, err := a.negValue(opt, &neg)
			if err != nil {
				return err
			}
			f := FieldIIFName
			if opt == "-o" || opt == "--out-interface" {
				f = FieldOIFName
			}
			if p, ok := strings.CutSuffix(v, "+"); ok {
				v = p + "*"
			}
			r.Conds = append(r.Conds, Cond{Field: f, Names: []string{v}, Neg: neg})
		case opt == "-p" || opt == "--protocol":
			v, err := a.negValue(opt, &neg)
			if err != nil {
				return err
			}
			if c, ok := protoCond(v, neg); ok {
				r.Conds = append(r.Conds, c)
			}
		case opt == "-s" || opt == "--source" || opt == "-d" || opt == "--destination":
			v, err := a.negValue(opt, &neg)
			if err != nil {
				return err
			}
			if v != "0.0.0.0/0" && v != "::/0" {
				r.Conds = append(r.Conds, Cond{Field: FieldOther, Text: strings.TrimLeft(opt, "-")[:1] + "addr " + v, Neg: neg})
			}
		case opt == "-f" || opt == "--fragment":
			r.Conds = append(r.Conds, Cond{Field: FieldOther, Text: "fragment", Neg: neg})
		default:
			if err := parseMatchOpt(r, match, opt, a.optArgs(), neg); err != nil {
				return err
			}
		}
		neg = false
	}
	if neg {
		return errors.New(`"!" at the end of the rule`)
	}
	return nil
}

func protoCond(v string, neg bool) (Cond, bool) {
	v = strings.ToLower(v)
	if v == "all" || v == "0" {
		return Cond{}, false
	}
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil {
		for num, name := range protoNames {
			if name == v || (v == "icmpv6" && num == 58) {
				n, err = num, nil
			}
		}
	}
	if err != nil {
		return Cond{Field: FieldOther, Text: "protocol " + v, Neg: neg}, true
	}
	return Cond{Field: FieldL4Proto, Values: []Range{{n, n}}, Neg: neg}, true
}

// parsePorts parses "80", "1000:2000", or a multiport list "80,443,1000:2000".
func parsePorts(s string) ([]Range, error) {
	var out []Range
	for p := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(p, ":")
		from, err := parsePort(a, 0)
		if err != nil {
			return nil, err
		}
		to := from
		if isRange {
			if to, err = parsePort(b, 65535); err != nil {
				return nil, err
			}
		}
		if to < from {
			return nil, fmt.Errorf("port range %q is reversed", p)
		}
		out = append(out, Range{from, to})
	}
	return out, nil
}

func parsePort(s string, dflt uint64) (uint64, error) {
	if s == "" {
		return dflt, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: not a number 0-65535 (service names are not resolved)", s)
	}
	return n, nil
}

// ctStateBits parses a --state / --ctstate list.
func ctStateBits(s string) (uint32, bool) {
	var m uint32
	for st := range strings.SplitSeq(s, ",") {
		switch strings.ToUpper(st) {
		case "INVALID":
			m |= CtInvalid
		case "ESTABLISHED":
			m |= CtEstablished
		case "RELATED":
			m |= CtRelated
		case "NEW":
			m |= CtNew
		case "UNTRACKED":
			m |= CtUntracked
		default: // SNAT, DNAT: NAT status, not a state
			return 0, false
		}
	}
	return m, m != 0
}

// parseMatchOpt decodes one option of the current -m module (or of the
// implicit tcp/udp module that -p loads).
func parseMatchOpt(r *Rule, match, opt string, vals []string, neg bool) error {
	// Old iptables-save printed "--dport ! 80".
	if len(vals) > 0 && vals[0] == "!" {
		neg, vals = !neg, vals[1:]
	}
	first := ""
	if len(vals) > 0 {
		first = vals[0]
	}
	switch {
	case (match == "state" && opt == "--state") || (match == "conntrack" && opt == "--ctstate"):
		r.Stateful = true
		if m, ok := ctStateBits(first); ok {
			r.Conds = append(r.Conds, Cond{Field: FieldCtState, Mask: m, Neg: neg})
		} else {
			r.Conds = append(r.Conds, Cond{Field: FieldCtState, Text: "-m " + match + " " + opt + " " + first, Neg: neg})
		}
	case match == "conntrack":
		r.Stateful = true
		r.Conds = append(r.Conds, Cond{Field: FieldCt, Text: "-m conntrack " + opt})
	case opt == "--dport" || opt == "--destination-port" || opt == "--sport" || opt == "--source-port" ||
		((match == "multiport") && (opt == "--dports" || opt == "--sports" || opt == "--destination-ports" || opt == "--source-ports")):
		ranges, err := parsePorts(first)
		if err != nil {
			return fmt.Errorf("%s: %w", opt, err)
		}
		f := FieldDPort
		if strings.HasPrefix(opt, "--s") {
			f = FieldSPort
		}
		r.Conds = append(r.Conds, Cond{Field: f, Values: ranges, Neg: neg})
	case (match == "tcp" || match == "") && (opt == "--tcp-flags" || opt == "--syn"):
		// --syn is --tcp-flags FIN,SYN,RST,ACK SYN (what iptables-save
		// prints for it).
		mask, comp := uint32(TCPFin|TCPSyn|TCPRst|TCPAck), uint32(TCPSyn)
		if opt == "--tcp-flags" {
			if len(vals) != 2 {
				return fmt.Errorf("--tcp-flags needs a mask and the flags that must be set, got %q", strings.Join(vals, " "))
			}
			var ok1, ok2 bool
			mask, ok1 = parseTCPFlags(vals[0])
			comp, ok2 = parseTCPFlags(vals[1])
			if !ok1 || !ok2 {
				// A flag this parser does not know: may or may not match.
				r.Conds = append(r.Conds, Cond{Field: FieldOther, Text: "--tcp-flags " + strings.Join(vals, " "), Neg: neg})
				return nil
			}
		} else if len(vals) != 0 {
			return fmt.Errorf("--syn takes no value, got %q", strings.Join(vals, " "))
		}
		c := Cond{Field: FieldTCPFlags, Mask: mask, Values: []Range{{uint64(comp), uint64(comp)}}, Neg: neg}
		switch {
		case comp&^mask != 0: // a flag that must be set outside the mask: never matches
			c.Values = []Range{{1, 0}}
		case mask == 0: // NONE: always matches (Mask 0 would mean all the flags)
			c.Mask, c.Values = 0xff, []Range{{0, 0xff}}
		}
		r.Conds = append(r.Conds, c)
	case match == "addrtype" && opt == "--dst-type" && first == "LOCAL":
		r.Conds = append(r.Conds, Cond{Field: FieldDaddrType, Values: []Range{{rtnLocal, rtnLocal}}, Neg: neg})
	case match == "comment" && opt == "--comment":
		r.Comment = first
	default:
		text := strings.TrimSpace("-m " + match + " " + opt + " " + strings.Join(vals, " "))
		if match == "" {
			text = strings.TrimSpace(opt + " " + strings.Join(vals, " "))
		}
		r.Conds = append(r.Conds, Cond{Field: FieldOther, Text: text, Neg: neg})
	}
	return nil
}

// parseTCPFlags parses a --tcp-flags list: "SYN,ACK", "ALL", "NONE".
func parseTCPFlags(s string) (uint32, bool) {
	var m uint32
	for f := range strings.SplitSeq(s, ",") {
		switch strings.ToUpper(f) {
		case "FIN":
			m |= TCPFin
		case "SYN":
			m |= TCPSyn
		case "RST":
			m |= TCPRst
		case "PSH":
			m |= TCPPsh
		case "ACK":
			m |= TCPAck
		case "URG":
			m |= TCPUrg
		case "ECE":
			m |= TCPEce
		case "CWR":
			m |= TCPCwr
		case "ALL":
			m |= 0xff
		case "NONE":
		default:
			return 0, false
		}
	}
	return m, true
}

// setIptTarget records -j TARGET / -g CHAIN.
func setIptTarget(r *Rule, target string, isGoto bool) {
	switch target {
	case "ACCEPT":
		r.Verdict = "accept"
	case "DROP":
		r.Verdict = "drop"
	case "REJECT":
		r.Verdict = "reject"
	case "RETURN":
		r.Verdict = "return"
	case "QUEUE", "NFQUEUE":
		r.Verdict = "queue"
	case "NOTRACK":
		r.Notrack = true
	case "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP":
		r.NAT = strings.ToLower(target)
	case "CT", "LOG", "NFLOG", "MARK", "CONNMARK", "TCPMSS", "DSCP", "TOS", "TTL", "HL", "CLASSIFY",
		"TRACE", "AUDIT", "CHECKSUM", "SET", "TEE", "SECMARK", "CONNSECMARK", "ULOG", "LED", "IDLETIMER", "RATEEST":
		// Non-terminating targets (CT is decoded by its options).
	default:
		// A user chain, or an extension target that resolveTargets
		// recognises once all chains are known.
		r.Verdict, r.Target = "jump", target
		if isGoto {
			r.Verdict = "goto"
		}
	}
}

// parseTargetOpt decodes the options of the rule's target.
func parseTargetOpt(r *Rule, target, opt string, vals []string) error {
	if target != "CT" {
		return nil
	}
	switch opt {
	case "--notrack":
		r.Notrack = true
	case "--helper":
		if len(vals) == 0 {
			return errors.New("--helper needs a name")
		}
		r.Helper = vals[0]
	}
	return nil
}
