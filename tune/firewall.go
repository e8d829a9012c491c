package tune

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/ruleset"
)

// Firewall plans NOTRACK on a namespace's live ruleset (package ruleset):
// the accept rule for untracked packets in the operator's own chains, the
// NOTRACK rules at raw priority, or the refusal when the traffic is NATed
// or helped.
type Firewall struct {
	Ruleset *ruleset.Ruleset
	// Target is the namespace the ruleset was read from.
	Target ruleset.Target
}

// PlanNotrack implements NotrackPlanner.
func (f Firewall) PlanNotrack(m analyze.TrafficMatch, _ Target) ([]Step, error) {
	sel := ruleset.Loopback()
	if !m.Loopback {
		sel = ruleset.Service(m.Proto, m.Port)
	}
	rp, err := ruleset.PlanNotrack(f.Ruleset, sel, f.Target)
	var refused *ruleset.RefusedError
	switch {
	case errors.As(err, &refused):
		return nil, &Refusal{Reason: refused.Error()}
	case err != nil:
		return nil, err
	}
	pre := f.Target.Prefix()
	var steps []Step
	for _, s := range rp.Steps {
		st := Step{Title: stepTitle(m, s), Reason: s.What + ". " + s.Why, Scope: ScopeNetNS, Key: string(s.Kind) + " ruleset",
			Current: "tracked", Proposed: "untracked", Notrack: &m,
			Persist: "not persisted by ctdoctor: add the same rules to the firewall's own configuration (/etc/nftables.conf, iptables-save > /etc/iptables/rules.v4, firewalld) or they are gone at reboot"}
		switch s.Kind {
		case ruleset.StepNft:
			if len(s.Commands) != 1 {
				return nil, fmt.Errorf("nft step %q: want one batch command, got %d", s.What, len(s.Commands))
			}
			script, ok := heredocBody(s.Commands[0])
			if !ok {
				return nil, fmt.Errorf("nft step %q: not an nft -f here-document: %q", s.What, s.Commands[0])
			}
			st.Actions = []Action{{Kind: KindNft, Script: script}}
			st.Commands = []string{nftCommand(pre, script)}
		case ruleset.StepIptables:
			if len(s.Commands) != len(s.Undo) {
				return nil, fmt.Errorf("iptables step %q: %d commands but %d undo commands", s.What, len(s.Commands), len(s.Undo))
			}
			for i, c := range s.Commands {
				argv, err := shellWords(strings.TrimPrefix(c, pre))
				if err != nil {
					return nil, fmt.Errorf("iptables step %q: %w", s.What, err)
				}
				undo, err := shellWords(strings.TrimPrefix(s.Undo[i], pre))
				if err != nil {
					return nil, fmt.Errorf("iptables step %q: %w", s.What, err)
				}
				st.Actions = append(st.Actions, Action{Kind: KindIptables, Argv: argv, UndoArgv: undo})
			}
			st.Commands = s.Commands
		default:
			return nil, fmt.Errorf("ruleset step kind %q unknown", s.Kind)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// stepTitle says in one line what a ruleset step does; the details (which
// chain, before which handle) go to the step's reason.
func stepTitle(m analyze.TrafficMatch, s ruleset.Step) string {
	var chains []string
	table := false
	for _, c := range s.Changes {
		switch c.Action {
		case "insert-rule":
			// Several rules may go into one chain: name it once.
			if ch := strings.TrimSpace(string(c.Family) + " " + c.Table + " " + c.Chain); !slices.Contains(chains, ch) {
				chains = append(chains, ch)
			}
		case "add-table", "add-rule":
			table = true
		}
	}
	what := describeMatch(m)
	via := "nft"
	if s.Kind == ruleset.StepIptables {
		via = string(s.Backend)
	}
	switch {
	case len(chains) > 0 && table:
		return fmt.Sprintf("stop tracking %s: accept its untracked packets first (%s), then NOTRACK at raw priority (%s, all or nothing)", what, strings.Join(chains, ", "), via)
	case len(chains) > 0:
		return fmt.Sprintf("accept untracked packets of %s first (%s; %s)", what, strings.Join(chains, ", "), via)
	}
	return fmt.Sprintf("stop tracking %s: NOTRACK at raw priority (%s)", what, via)
}

// nftCommand is the shell command that runs an nft batch in one nft
// invocation (all or nothing), one line of the batch a line: the first
// line ends in "nft '", the batch follows line by line, and the quote
// closes at the end of its last line. Inside single quotes the shell
// passes the newlines to nft, which reads them between commands as in a
// file, so the command runs as printed; unlike a here-document (whose end
// marker must start its line) it also runs pasted indented from a report,
// since nft skips the blanks that start a line (render lays the lines out
// that way, and breaks a long one with a backslash, which nft reads as a
// blank).
func nftCommand(pre, script string) string {
	return pre + "nft '\n" + strings.ReplaceAll(strings.TrimSpace(script), "'", `'\''`) + "'"
}

// heredocBody returns the body of "… <<'EOF'\n…\nEOF".
func heredocBody(cmd string) (string, bool) {
	head, rest, ok := strings.Cut(cmd, "<<'EOF'\n")
	if !ok || !strings.Contains(head, "nft -f -") {
		return "", false
	}
	body, ok := strings.CutSuffix(rest, "\nEOF")
	return body + "\n", ok
}

// shellWords splits a command line into words as a POSIX shell would for
// plain words, single and double quotes and backslashes (no expansions: a
// $, `, glob or operator is an error, since the planner never prints one).
func shellWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if in {
				words, in = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				} else if strings.IndexByte("$`", s[i]) >= 0 {
					return nil, fmt.Errorf("expansion in %q", s)
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf(`unterminated " in %q`, s)
			}
			in = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case strings.IndexByte("$`|&;<>()*?[{}~", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q in %q", c, s)
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
