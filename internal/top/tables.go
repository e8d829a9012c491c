package top

import (
	"cmp"
	"slices"
	"strings"

	"charm.land/lipgloss/v2"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/watch"
)

// SortMode orders the rows of the breakdown tables.
type SortMode int

const (
	// ByEntries puts the largest rows first (the default).
	ByEntries SortMode = iota
	// ByChange puts the rows that changed most since the previous
	// refresh first, up or down.
	ByChange
	// ByName sorts the rows by their key.
	ByName
)

func (s SortMode) String() string {
	switch s {
	case ByChange:
		return "change"
	case ByName:
		return "name"
	}
	return "entries"
}

// ParseSort reads a SortMode's name (entries, change or name).
func ParseSort(s string) (SortMode, bool) {
	for _, m := range []SortMode{ByEntries, ByChange, ByName} {
		if m.String() == s {
			return m, true
		}
	}
	return ByEntries, false
}

// otherKey is the row that sums the rows beyond a top table's bound.
const otherKey = "other"

// table is one breakdown table, its rows sorted and filtered.
type table struct {
	title   string
	rows    []watch.Row
	total   int  // rows before the filter
	address bool // keys are addresses: cut their middle, not their end
	keyMin  int  // the key column's narrowest width
	numW    int  // the entries column's width
	dltW    int  // the change column's width
	keyNat  int  // the widest key
}

// tables returns the frame's breakdown tables in screen order.
func tables(f *watch.Frame, sortBy SortMode, filter string) []*table {
	specs := []struct {
		title   string
		rows    []watch.Row
		address bool
		keyMin  int
	}{
		{"By TCP state", f.ByState, false, 11},
		{"By protocol", f.ByProto, false, 6},
		{"Top services", f.TopServices, true, 12},
		{"Top sources", f.TopSources, true, 12},
		{"Top destinations", f.TopDests, true, 12},
	}
	out := make([]*table, 0, len(specs))
	for _, s := range specs {
		t := &table{title: s.title, address: s.address, total: len(s.rows), numW: 6, dltW: 4}
		t.rows = sortRows(filterRows(s.rows, filter), sortBy)
		for _, r := range t.rows {
			t.keyNat = max(t.keyNat, render.VisibleWidth(r.Key))
			t.numW = max(t.numW, len(num(r.Entries)))
			t.dltW = max(t.dltW, len(delta(r.Delta)))
		}
		t.keyMin = min(max(t.keyNat, 4), s.keyMin)
		out = append(out, t)
	}
	return out
}

// filterRows keeps the rows whose key holds filter (case-insensitive).
func filterRows(rows []watch.Row, filter string) []watch.Row {
	if filter == "" {
		return slices.Clone(rows)
	}
	f := strings.ToLower(filter)
	var out []watch.Row
	for _, r := range rows {
		if strings.Contains(strings.ToLower(r.Key), f) {
			out = append(out, r)
		}
	}
	return out
}

// sortRows orders rows by the sort mode; "other" stays last.
func sortRows(rows []watch.Row, by SortMode) []watch.Row {
	slices.SortStableFunc(rows, func(a, b watch.Row) int {
		if ao, bo := a.Key == otherKey, b.Key == otherKey; ao != bo {
			if ao {
				return 1
			}
			return -1
		}
		switch by {
		case ByChange:
			if c := cmp.Compare(abs(b.Delta), abs(a.Delta)); c != 0 {
				return c
			}
			return cmp.Compare(b.Entries, a.Entries)
		case ByName:
			return cmp.Compare(a.Key, b.Key)
		}
		if c := cmp.Compare(b.Entries, a.Entries); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return rows
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func (t *table) minWidth() int { return max(minTableWidth, t.keyMin+1+t.numW+1+t.dltW) }

func (t *table) natWidth() int {
	return max(render.VisibleWidth(t.title)+2, t.keyNat+1+t.numW+1+t.dltW, t.minWidth())
}

// minTableWidth is the narrowest a table gets.
const minTableWidth = 18

// maxStretch is how many columns a table gets beyond its natural width
// on a wide terminal: more would set the numbers far from their keys.
const maxStretch = 8

// tableGap separates the tables of a row.
const tableGap = "  "

// gridRow is one row of tables side by side, with each one's width.
type gridRow struct {
	tables []*table
	widths []int
}

// pack lays the tables out in rows that fit width: as many in a row as
// their narrowest widths allow, in order, then the row's spare columns
// shared out (first up to each table's natural width, then evenly).
func pack(ts []*table, width int) []gridRow {
	var rows []gridRow
	var cur gridRow
	used := 0
	for _, t := range ts {
		w := min(t.minWidth(), width)
		if len(cur.tables) > 0 && used+len(tableGap)+w > width {
			rows = append(rows, cur)
			cur, used = gridRow{}, 0
		}
		if len(cur.tables) > 0 {
			used += len(tableGap)
		}
		cur.tables = append(cur.tables, t)
		cur.widths = append(cur.widths, w)
		used += w
	}
	if len(cur.tables) > 0 {
		rows = append(rows, cur)
	}
	for i := range rows {
		r := &rows[i]
		spare := width - (len(r.tables)-1)*len(tableGap)
		for _, w := range r.widths {
			spare -= w
		}
		for j, t := range r.tables {
			add := min(spare, max(0, min(t.natWidth(), width)-r.widths[j]))
			r.widths[j] += add
			spare -= add
		}
		for j := range r.widths {
			add := min(spare/(len(r.widths)-j), maxStretch)
			r.widths[j] += add
			spare -= add
		}
	}
	return rows
}

// maxRows is how many data rows the row's tallest table has.
func (r gridRow) maxRows() int {
	n := 1 // "(none)"
	for _, t := range r.tables {
		n = max(n, len(t.rows))
	}
	return n
}

// lines draws the row with n data lines under the titles.
func (r gridRow) lines(st styles, n int, filter string) []string {
	cells := make([][]string, len(r.tables))
	for i, t := range r.tables {
		cells[i] = t.lines(st, r.widths[i], n, filter)
	}
	out := make([]string, n+1)
	for l := range out {
		var b strings.Builder
		for i := range r.tables {
			if i > 0 {
				b.WriteString(tableGap)
			}
			b.WriteString(padStyled(cells[i][l], r.widths[i]))
		}
		out[l] = b.String()
	}
	return out
}

// lines draws the table in width columns: its title, then n lines of
// rows (the last one saying how many more there are when they do not all
// fit).
func (t *table) lines(st styles, width, n int, filter string) []string {
	title := t.title
	if filter != "" {
		title += " " + "(" + itoa(len(t.rows)) + "/" + itoa(t.total) + ")"
	}
	out := []string{st.bold.Render(fit(title, width, false))}
	keyW := max(1, width-t.numW-t.dltW-2)
	rows := t.rows
	var more []watch.Row
	if len(rows) > n {
		keep := n
		if n >= 3 {
			keep = n - 1 // the last line says how many more
		}
		rows, more = rows[:keep], rows[keep:]
	}
	for _, r := range rows {
		line := render.Pad(fit(r.Key, keyW, t.address), keyW) + " " + padLeft(num(r.Entries), t.numW) + " "
		d := padLeft(delta(r.Delta), t.dltW)
		switch {
		case r.Delta > 0:
			d = st.growth.Render(d)
		case r.Delta < 0:
			d = st.shrink.Render(d)
		}
		out = append(out, line+d)
	}
	if len(more) > 0 && n >= 3 {
		var sum int64
		for _, r := range more {
			sum += r.Entries
		}
		out = append(out, st.dim.Render(fit("+"+itoa(len(more))+" more rows, "+num(sum)+" entries", width, false)))
	}
	if len(t.rows) == 0 && n > 0 {
		msg := "(none)"
		if filter != "" && t.total > 0 {
			msg = "(no match)"
		}
		out = append(out, st.dim.Render(msg))
	}
	for len(out) < n+1 {
		out = append(out, "")
	}
	return out
}

// padStyled pads a styled string with spaces to n columns.
func padStyled(s string, n int) string {
	if w := lipgloss.Width(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}

func itoa(n int) string { return num(int64(n)) }
