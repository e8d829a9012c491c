package apply

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/tune"
)

// sysctlName turns /proc/sys/net/netfilter/x into net.netfilter.x.
func sysctlName(p string) string {
	return strings.ReplaceAll(strings.TrimPrefix(p, "/proc/sys/"), "/", ".")
}

// WriteDiff prints what the plan changes: per step, current → proposed
// for every value, a line diff for every file, the nft batch and the
// iptables commands, and the step's commands as a person would type them.
func (c *Checked) WriteDiff(w io.Writer) {
	p := c.Plan
	todo, already := c.Todo()
	width := render.Width(w)
	para := func(first, rest, text string) {
		for _, l := range render.Wrap(text, width, first, rest) {
			fmt.Fprintln(w, l)
		}
	}
	para("", "  ", fmt.Sprintf("Plan %s, made %s for host %s · %s", p.ID, p.CreatedAt.Local().Format("2006-01-02 15:04"), p.Host.Hostname, c.t.where()))
	fmt.Fprintf(w, "%d %s", todo, plural(todo, "change", "changes"))
	if already > 0 {
		fmt.Fprintf(w, ", %d already in place", already)
	}
	fmt.Fprintln(w)
	if n := len(p.GlobalSteps); n > 0 {
		para("", "", fmt.Sprintf("(%d %s for the whole host %s listed apart in the plan and not applied: make the plan with --global to include them)",
			n, plural(n, "step", "steps"), plural(n, "is", "are")))
	}
	for i, s := range p.Steps {
		var xs []*checked
		for _, x := range c.actions {
			if x.step == i {
				xs = append(xs, x)
			}
		}
		done := true
		for _, x := range xs {
			done = done && !x.todo
		}
		head := fmt.Sprintf("Step %d/%d · %s · %s", i+1, len(p.Steps), s.Scope, s.Title)
		if s.Finding != "" {
			head += fmt.Sprintf(" (%s)", s.Finding)
		}
		if done {
			head += " — already in place"
		}
		fmt.Fprintln(w)
		para("", "    ", head)
		if s.Reason != "" {
			para("    why: ", "         ", s.Reason)
		}
		for _, x := range xs {
			x.writeDiff(w)
		}
		if s.Persist != "" {
			para("    persists: ", "              ", s.Persist)
		}
		for _, cmd := range s.Commands {
			for _, l := range render.Command(cmd, width, "  $ ", 6) {
				fmt.Fprintln(w, l)
			}
		}
	}
}

func (x *checked) writeDiff(w io.Writer) {
	a := x.a
	mark := ""
	if !x.todo {
		mark = "   (already)"
	}
	width := render.Width(w)
	line := func(text string) {
		if 4+render.VisibleWidth(text) <= width {
			fmt.Fprintln(w, "    "+text) // as is: the columns' spacing kept
			return
		}
		for _, l := range render.Wrap(text, width, "    ", "      ") {
			fmt.Fprintln(w, l)
		}
	}
	switch a.Kind {
	case tune.KindSysctl:
		line(fmt.Sprintf("%s   %s → %s%s", sysctlName(a.Path), norm(x.cur), norm(a.Value), mark))
	case tune.KindModuleParam:
		line(fmt.Sprintf("%s   %s → %s%s", a.Path, norm(x.cur), norm(a.Value), mark))
	case tune.KindFile:
		cur := x.curFile
		switch {
		case !x.todo:
			line(a.Path + mark)
		case a.Remove:
			line(fmt.Sprintf("%s   removed (%s)", a.Path, describeFile(cur)))
			writeLineDiff(w, string(cur.Content), "")
		case cur.Absent:
			line(fmt.Sprintf("%s   new file, mode %04o", a.Path, fileMode(a)))
			writeLineDiff(w, "", a.Value)
		default:
			line(fmt.Sprintf("%s   changed (mode %04o and owner %d:%d kept)", a.Path, cur.Mode, cur.UID, cur.GID))
			writeLineDiff(w, string(cur.Content), a.Value)
		}
	case tune.KindNft:
		line("nft batch (all or nothing)" + mark + ":")
		for _, l := range strings.Split(strings.TrimRight(a.Script, "\n"), "\n") {
			for i, part := range nftLines(l, width-8) {
				if i == 0 {
					fmt.Fprintln(w, "      + "+part)
				} else {
					fmt.Fprintln(w, "        "+part)
				}
			}
		}
	case tune.KindIptables:
		for _, l := range render.Command(strings.Join(a.Argv, " ")+mark, width, "    + ", 8) {
			fmt.Fprintln(w, l)
		}
	}
}

// writeLineDiff prints a line diff of two small files: "-" for removed
// lines, "+" for added ones, two lines of context.
func writeLineDiff(w io.Writer, from, to string) {
	a, b := splitLines(from), splitLines(to)
	// longest common subsequence, table from the end
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var ops []line
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, line{' ', a[i]})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, line{'-', a[i]})
			i++
		default:
			ops = append(ops, line{'+', b[j]})
			j++
		}
	}
	near := func(k int) bool {
		for d := -2; d <= 2; d++ {
			if k+d >= 0 && k+d < len(ops) && ops[k+d].op != ' ' {
				return true
			}
		}
		return false
	}
	skipped := false
	for k, l := range ops {
		if l.op == ' ' && !near(k) {
			if !skipped {
				fmt.Fprintln(w, "        …")
				skipped = true
			}
			continue
		}
		skipped = false
		fmt.Fprintf(w, "      %c %s\n", l.op, l.text)
	}
	if to != "" && !strings.HasSuffix(to, "\n") {
		fmt.Fprintln(w, "        (no newline at the end)")
	}
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// WriteOperations prints exactly what Apply will do, in order: the file
// written or the command run, and in which namespace.
func (c *Checked) WriteOperations(w io.Writer) {
	width := render.Width(w)
	para := func(first, rest, text string) {
		for _, l := range render.Wrap(text, width, first, rest) {
			fmt.Fprintln(w, l)
		}
	}
	para("", "", "What apply runs, in order (each read back and verified; on a failure the done ones are undone in reverse), after writing a journal under the state directory:")
	n := 0
	for _, x := range c.actions {
		if !x.todo {
			continue
		}
		n++
		a := x.a
		in := ""
		switch x.nsPath {
		case "":
		case initNetNSPath:
			in = "in the initial network namespace: "
		default:
			in = "in " + c.t.name + ": "
		}
		first := fmt.Sprintf("  %d. ", n)
		rest := strings.Repeat(" ", len(first))
		switch a.Kind {
		case tune.KindSysctl, tune.KindModuleParam:
			para(first, rest, fmt.Sprintf("%swrite %q to %s, read it back", in, a.Value+"\n", x.file))
		case tune.KindFile:
			switch {
			case a.Remove:
				para(first, rest, fmt.Sprintf("%sremove %s (its content is kept in the journal)", in, x.file))
			case x.curFile.Absent:
				para(first, rest, fmt.Sprintf("%screate %s, mode %04o, via a temporary file in its directory: write, fsync, rename, fsync the directory", in, x.file, fileMode(a)))
			default:
				para(first, rest, fmt.Sprintf("%sreplace %s (mode %04o, owner %d:%d kept) via a temporary file: write, fsync, rename, fsync the directory",
					in, x.file, x.curFile.Mode, x.curFile.UID, x.curFile.GID))
			}
		case tune.KindNft:
			para(first, rest, in+"nft --echo --handle -f - with this batch (its output records the handles undo deletes):")
			for _, l := range strings.Split(strings.TrimRight(a.Script, "\n"), "\n") {
				for _, part := range nftLines(l, width-len(rest)-2) {
					fmt.Fprintln(w, rest+"  "+part)
				}
			}
		case tune.KindIptables:
			for _, l := range render.Command(strings.Join(a.Argv, " "), width, first+in, len(rest)+2) {
				fmt.Fprintln(w, l)
			}
			for _, l := range render.Command(strings.Join(a.UndoArgv, " "), width, rest+"undo: ", len(rest)+2) {
				fmt.Fprintln(w, l)
			}
		}
	}
	fmt.Fprintln(w, "Nothing was changed (--dry-run).")
}

// nftLines is render.NftLine with the continuation parts indented by
// four, as the report prints a batch.
func nftLines(line string, room int) []string {
	parts := render.NftLine(line, room)
	for i := 1; i < len(parts); i++ {
		parts[i] = "    " + parts[i]
	}
	return parts
}

// label names an action for progress lines.
func label(a tune.Action) string {
	switch a.Kind {
	case tune.KindSysctl:
		return sysctlName(a.Path) + " = " + norm(a.Value)
	case tune.KindModuleParam:
		return a.Path + " = " + norm(a.Value)
	case tune.KindFile:
		if a.Remove {
			return "remove " + a.Path
		}
		return "write " + a.Path
	case tune.KindNft:
		n := strings.Count(strings.TrimRight(a.Script, "\n"), "\n") + 1
		return fmt.Sprintf("nft batch (%d %s)", n, plural(n, "line", "lines"))
	case tune.KindIptables:
		return strings.Join(a.Argv, " ")
	}
	return a.Kind
}

// undoLabel names what undoing an action restores.
func undoLabel(a tune.Action) string {
	switch a.Kind {
	case tune.KindSysctl:
		return sysctlName(a.Path)
	case tune.KindModuleParam, tune.KindFile:
		return a.Path
	case tune.KindNft:
		return "delete what the nft batch added"
	case tune.KindIptables:
		return strings.Join(a.UndoArgv, " ")
	}
	return a.Kind
}
