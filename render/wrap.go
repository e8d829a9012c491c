package render

import (
	"strings"
	"unicode/utf8"
)

// lay fills lines with tokens joined by sep: the first line has room for
// w1 visible columns, the others for w2. A token wider than its line gets
// a line of its own (callers split words that may be broken beforehand).
func lay(tokens []string, sep string, w1, w2 int) []string {
	var lines []string
	var cur strings.Builder
	n, curW, room, sepW := 0, 0, w1, VisibleWidth(sep)
	for _, tok := range tokens {
		tw := VisibleWidth(tok)
		if n > 0 && curW+sepW+tw > room {
			lines = append(lines, cur.String())
			cur.Reset()
			n, curW, room = 0, 0, w2
		}
		if n > 0 {
			cur.WriteString(sep)
			curW += sepW
		}
		cur.WriteString(tok)
		curW += tw
		n++
	}
	if n > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// words splits prose at blanks, and words wider than n columns into
// pieces of n columns (a long path or address in prose or evidence is
// better broken than running off the screen). s must hold no escapes.
//
// A phrase in single quotes ('options nf_conntrack hashsize=65536', a
// line to copy) is kept on one line when it fits in maxPhrase columns.
func words(s string, n int) []string {
	n = max(n, 1)
	var out []string
	for _, w := range phrases(strings.Fields(s), min(n, maxPhrase)) {
		for VisibleWidth(w) > n {
			cut, cw := 0, 0
			for i, r := range w {
				rw := runeWidth(r)
				if cw+rw > n && i > 0 {
					break
				}
				cut, cw = i+utf8.RuneLen(r), cw+rw
			}
			out = append(out, w[:cut])
			w = w[cut:]
		}
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

// maxPhrase is the widest quoted phrase words keeps on one line.
const maxPhrase = 48

// phrases joins the fields of a phrase in single quotes into one, when the
// phrase is at most n columns wide: a quote opens at the start of a field
// and closes at the end of one (before trailing punctuation), so the
// apostrophe in "kernel's" opens nothing.
func phrases(fields []string, n int) []string {
	var out []string
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if len(f) < 2 || f[0] != '\'' || closesQuote(f[1:]) {
			out = append(out, f)
			continue
		}
		j, w := i, VisibleWidth(f)
		for j+1 < len(fields) && w <= n {
			j++
			w += 1 + VisibleWidth(fields[j])
			if closesQuote(fields[j]) {
				break
			}
		}
		if j == i || w > n || !closesQuote(fields[j]) {
			out = append(out, f)
			continue
		}
		out = append(out, strings.Join(fields[i:j+1], " "))
		i = j
	}
	return out
}

// closesQuote reports whether a field ends a single-quoted phrase: it ends
// in a quote, perhaps followed by punctuation.
func closesQuote(f string) bool {
	f = strings.TrimRight(f, ".,;:)!?")
	return strings.HasSuffix(f, "'")
}

// shellCommand splits one line of POSIX shell into its words, each kept
// exactly as written (quotes and backslashes included), and the comment
// that ends the line (from an unquoted '#' that starts a word, without
// the '#'). ok is false when the line has an unterminated quote or a
// trailing backslash: such a line is printed unbroken.
func shellCommand(line string) (argv []string, comment string, ok bool) {
	var (
		quote byte // 0, '\'' or '"'
		start = -1 // where the current word began
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
			continue
		case quote == '"':
			switch c {
			case '\\':
				i++
			case '"':
				quote = 0
			}
			continue
		}
		switch c {
		case ' ', '\t':
			if start >= 0 {
				argv = append(argv, line[start:i])
				start = -1
			}
			continue
		case '#':
			if start < 0 {
				return argv, strings.TrimSpace(line[i+1:]), true
			}
		}
		if start < 0 {
			start = i
		}
		switch c {
		case '\\':
			i++
			if i >= len(line) {
				return nil, "", false
			}
		case '\'', '"':
			quote = c
		}
	}
	if quote != 0 {
		return nil, "", false
	}
	if start >= 0 {
		argv = append(argv, line[start:])
	}
	return argv, "", true
}

// commandLines lays out a command of several lines for a width of width
// columns, its first line after first. A command that hands nft a batch
// in single quotes (see nftBatch) has each line of the batch indented to
// column cont+2 (nft skips the blanks that start a line) and one too wide
// broken at the blanks outside double quotes, each part but the last
// ending in " \\" (inside the single quotes the shell passes the backslash
// and the newline to nft, which reads them as a blank), the parts after
// the first indented by four more: pasted as printed it is the same batch.
// Any other command of several lines is printed as it is, its lines
// unindented, since inside a quote or a here-document a blank added at
// the start of a line would change it.
func commandLines(cmd string, width int, first string, cont int) []string {
	lines := strings.Split(cmd, "\n")
	if !nftBatch(lines) {
		return append([]string{first + lines[0]}, lines[1:]...)
	}
	// The words before the quote break as any command's.
	out := Command(strings.TrimSuffix(lines[0], " '"), width-2, first, cont)
	out[len(out)-1] += " '"
	for _, l := range lines[1:] {
		for i, part := range NftLine(strings.TrimSpace(l), width-cont-2) {
			col := cont + 2
			if i > 0 {
				col += 4
			}
			if w := VisibleWidth(part); col+w > width && width-w >= minIndent {
				col = width - w // a long word: move left to fit
			}
			out = append(out, indent(col)+part)
		}
	}
	return out
}

// nftBatch reports whether the lines of a command hand nft a batch in
// single quotes: the first line is a plain command whose last word is nft
// followed by an opening quote, the quote closes at the end of the last
// line, and no other single quote comes between (so every line of the
// batch is inside the quotes).
func nftBatch(lines []string) bool {
	if len(lines) < 2 {
		return false
	}
	head, ok := strings.CutSuffix(lines[0], " '")
	if !ok {
		return false
	}
	argv, comment, ok := shellCommand(head)
	if !ok || comment != "" || len(argv) == 0 || argv[len(argv)-1] != "nft" {
		return false
	}
	body, ok := strings.CutSuffix(strings.Join(lines[1:], "\n"), "'")
	return ok && !strings.Contains(body, "'")
}

// NftLine breaks one line of an nft batch for room columns at the blanks
// outside double quotes, every part but the last ending in " \\", the
// parts after the first having four columns less (they are indented by
// four). A line that fits stays whole; a word wider than its line is not
// broken.
func NftLine(line string, room int) []string {
	if VisibleWidth(line) <= room {
		return []string{line}
	}
	var words []string
	start, quoted := 0, false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			quoted = !quoted
		case (c == ' ' || c == '\t') && !quoted:
			if i > start {
				words = append(words, line[start:i])
			}
			start = i + 1
		}
	}
	if start < len(line) {
		words = append(words, line[start:])
	}
	parts := lay(words, " ", room-len(lineJoin), room-4-len(lineJoin))
	for i := range len(parts) - 1 {
		parts[i] += lineJoin
	}
	return parts
}

// isCommandName reports whether w can name a program or shell builtin:
// a fix whose first word is something else ("conntrack:", a YAML key) is
// not shell and is never broken with backslashes.
func isCommandName(w string) bool {
	if w == "" {
		return false
	}
	for _, r := range w {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("_./+-", r):
		default:
			return false
		}
	}
	return true
}

// Wrap lays out prose (no escape codes) at blanks for a width of width
// columns: the first line after first, the others after rest. Words wider
// than a line are broken. An empty s gives the bare first prefix.
func Wrap(s string, width int, first, rest string) []string {
	fw, rw := VisibleWidth(first), VisibleWidth(rest)
	lines := lay(words(s, max(width-max(fw, rw), 1)), " ", width-fw, width-rw)
	if len(lines) == 0 {
		return []string{first}
	}
	for i := range lines {
		if i == 0 {
			lines[i] = first + lines[i]
		} else {
			lines[i] = rest + lines[i]
		}
	}
	return lines
}
