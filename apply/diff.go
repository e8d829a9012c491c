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
	switch a.Kind {
	case tune.KindSysctl:
		fmt.Fprintf(w, "    %s   %s → %s%s\n", sysctlName(a.Path), norm(x.cur), norm(a.Value), mark)
	case tune.KindModuleParam:
		fmt.Fprintf(w, "    %s   %s → %s%s\n", a.Path, norm(x.cur), norm(a.Value), mark)
	case tune.KindFile:
		cur := x.curFile
		switch {
		case !x.todo:
			fmt.Fprintf(w, "    %s%s\n", a.Path, mark)
		case a.Remove:
			fmt.Fprintf(w, "    %s   removed (%s)\n", a.Path, describeFile(cur))
			writeLineDiff(w, string(cur.Content), "")
		case cur.Absent:
			fmt.Fprintf(w, "    %s   new file, mode %04o\n", a.Path, fileMode(a))
			writeLineDiff(w, "", a.Value)
		default:
			fmt.Fprintf(w, "    %s   changed (mode %04o and owner %d:%d kept)\n", a.Path, cur.Mode, cur.UID, cur.GID)
			writeLineDiff(w, string(cur.Content), a.Value)
		}
	case tune.KindNft:
		fmt.Fprintf(w, "    nft batch (all or nothing)%s:\n", mark)
		for _, l := range strings.Split(strings.TrimRight(a.Script, "\n"), "\n") {
			fmt.Fprintf(w, "      + %s\n", l)
		}
	case tune.KindIptables:
		fmt.Fprintf(w, "    + %s%s\n", strings.Join(a.Argv, " "), mark)
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
	fmt.Fprintln(w, "What apply runs, in order (each read back and verified; on a failure the")
	fmt.Fprintln(w, "done ones are undone in reverse), after writing a journal under the state directory:")
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
		fmt.Fprintf(w, "  %d. %s", n, in)
		switch a.Kind {
		case tune.KindSysctl, tune.KindModuleParam:
			fmt.Fprintf(w, "write %q to %s, read it back\n", a.Value+"\n", x.file)
		case tune.KindFile:
			switch {
			case a.Remove:
				fmt.Fprintf(w, "remove %s (its content is kept in the journal)\n", x.file)
			case x.curFile.Absent:
				fmt.Fprintf(w, "create %s, mode %04o, via a temporary file in its directory: write, fsync, rename, fsync the directory\n", x.file, fileMode(a))
			default:
				fmt.Fprintf(w, "replace %s (mode %04o, owner %d:%d kept) via a temporary file: write, fsync, rename, fsync the directory\n",
					x.file, x.curFile.Mode, x.curFile.UID, x.curFile.GID)
			}
		case tune.KindNft:
			fmt.Fprintln(w, "nft --echo --handle -f - <<'EOF'   (its output records the handles undo deletes)")
			for _, l := range strings.Split(strings.TrimRight(a.Script, "\n"), "\n") {
				fmt.Fprintf(w, "       %s\n", l)
			}
			fmt.Fprintln(w, "     EOF")
		case tune.KindIptables:
			fmt.Fprintf(w, "%s   (undo: %s)\n", strings.Join(a.Argv, " "), strings.Join(a.UndoArgv, " "))
		}
	}
	fmt.Fprintln(w, "Nothing was changed (--dry-run).")
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
