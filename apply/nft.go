package apply

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// NftObject is one object an nft batch created, as `nft --echo --handle`
// reported it.
type NftObject struct {
	Kind   string `json:"kind"` // table, chain, rule, set, map, flowtable, element, counter, …
	Family string `json:"family"`
	Table  string `json:"table"`
	Chain  string `json:"chain,omitempty"` // rules
	Name   string `json:"name,omitempty"`  // chains, sets, maps, objects; the set of an element
	Handle uint64 `json:"handle,omitempty"`
	// TableHandle is the handle of the table the object is in, read after
	// the batch: rule handles restart in a re-created table, so an undo
	// deletes only while the table is still the same one.
	TableHandle uint64 `json:"table_handle,omitempty"`
	// Text is the echoed command (for elements: what undo deletes).
	Text string `json:"text"`
}

func (o NftObject) String() string {
	switch o.Kind {
	case "table":
		return fmt.Sprintf("table %s %s (handle %d)", o.Family, o.Table, o.Handle)
	case "rule":
		return fmt.Sprintf("rule %s %s %s handle %d", o.Family, o.Table, o.Chain, o.Handle)
	case "element":
		return o.Text
	}
	return fmt.Sprintf("%s %s %s %s (handle %d)", o.Kind, o.Family, o.Table, o.Name, o.Handle)
}

var nftFamilies = map[string]bool{"ip": true, "ip6": true, "inet": true, "arp": true, "bridge": true, "netdev": true}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

// parseEcho reads `nft --echo --handle -f` output. complete says the
// output ends with nft's "# new generation" line, which it prints after
// the batch is committed and echoed.
func parseEcho(b []byte) (objs []NftObject, complete bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "# new generation") {
			complete = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || (f[0] != "add" && f[0] != "insert" && f[0] != "create") {
			return nil, false, fmt.Errorf("unexpected nft echo line %q", line)
		}
		o := NftObject{Kind: f[1], Text: line}
		rest := f[2:]
		if o.Kind == "ct" && len(rest) > 0 { // ct helper, ct timeout, ct expectation
			o.Kind, rest = "ct "+rest[0], rest[1:]
		}
		if len(rest) > 0 && nftFamilies[rest[0]] {
			o.Family, rest = rest[0], rest[1:]
		} else {
			o.Family = "ip"
		}
		need := 2
		switch o.Kind {
		case "table":
			need = 1
		case "rule":
			need = 2
		}
		if len(rest) < need {
			return nil, false, fmt.Errorf("unexpected nft echo line %q", line)
		}
		o.Table = rest[0]
		switch o.Kind {
		case "table":
		case "rule":
			o.Chain = rest[1]
		default:
			o.Name = strings.TrimSuffix(rest[1], "{")
		}
		if o.Kind != "element" {
			m := handleRE.FindAllStringSubmatch(line, -1)
			if m == nil {
				return nil, false, fmt.Errorf("nft echo line %q has no handle", line)
			}
			o.Handle, _ = strconv.ParseUint(m[len(m)-1][1], 10, 64)
		}
		objs = append(objs, o)
	}
	if err := sc.Err(); err != nil {
		return nil, false, err
	}
	return objs, complete, nil
}

// ruleset is an `nft -j list ruleset` listing, indexed by handle.
type ruleset struct {
	tables  map[string]uint64 // "family table" → handle
	objects map[string]bool   // objKey → present
	list    []listed          // every object but the tables, in listing order
}

// listed is one object of a listing with where it is.
type listed struct {
	kind, family, table, chain, name string
	tableHandle, handle              uint64
}

func objKey(kind, family, table string, tableHandle uint64, chain string, handle uint64) string {
	if kind == "map" {
		kind = "set" // listed as "map", deleted as either
	}
	return fmt.Sprintf("%s|%s|%s|%d|%s|%d", kind, family, table, tableHandle, chain, handle)
}

// parseRuleset indexes `nft -j list ruleset`.
func parseRuleset(b []byte) (*ruleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse nft -j list ruleset: %w", err)
	}
	type obj struct {
		Family string `json:"family"`
		Table  string `json:"table"`
		Chain  string `json:"chain"`
		Name   string `json:"name"`
		Handle uint64 `json:"handle"`
	}
	rs := &ruleset{tables: map[string]uint64{}, objects: map[string]bool{}}
	var rest []struct {
		kind string
		o    obj
	}
	for _, item := range doc.Nftables {
		for kind, raw := range item {
			if kind == "metainfo" {
				continue
			}
			var o obj
			if err := json.Unmarshal(raw, &o); err != nil {
				continue
			}
			if kind == "table" {
				rs.tables[o.Family+" "+o.Name] = o.Handle
				rs.objects[objKey("table", o.Family, o.Name, o.Handle, "", o.Handle)] = true
				continue
			}
			rest = append(rest, struct {
				kind string
				o    obj
			}{kind, o})
		}
	}
	for _, r := range rest {
		th := rs.tables[r.o.Family+" "+r.o.Table]
		chain := ""
		if r.kind == "rule" {
			chain = r.o.Chain
		}
		rs.objects[objKey(r.kind, r.o.Family, r.o.Table, th, chain, r.o.Handle)] = true
		rs.list = append(rs.list, listed{kind: r.kind, family: r.o.Family, table: r.o.Table, chain: chain, name: r.o.Name, tableHandle: th, handle: r.o.Handle})
	}
	return rs, nil
}

// has reports whether o (from this batch, with its table handle) exists.
func (rs *ruleset) has(o NftObject) bool {
	if o.Kind == "element" {
		return false
	}
	if o.Kind == "table" {
		return rs.tables[o.Family+" "+o.Table] == o.Handle
	}
	return rs.objects[objKey(o.Kind, o.Family, o.Table, o.TableHandle, o.Chain, o.Handle)]
}

// listRuleset lists the namespace's ruleset as JSON.
func listRuleset(nsPath string) ([]byte, *ruleset, error) {
	var out bytes.Buffer
	if err := runCmd(nsPath, []string{"nft", "-j", "list", "ruleset"}, "", &out); err != nil {
		return nil, nil, err
	}
	rs, err := parseRuleset(out.Bytes())
	return out.Bytes(), rs, err
}

// createdInBatch reports whether the batch created o's table (or, for an
// element, its set): deleting that covers o.
func createdInBatch(objs []NftObject, o NftObject) bool {
	for _, c := range objs {
		if c.Family != o.Family || c.Table != o.Table {
			continue
		}
		if c.Kind == "table" {
			return true
		}
		if o.Kind == "element" && (c.Kind == "set" || c.Kind == "map") && c.Name == o.Name {
			return true
		}
	}
	return false
}

// undoScript deletes, in reverse order, the objects of a batch that still
// exist (with the same table). Objects inside a table the batch created
// are deleted one by one before the table, so that a rule the operator
// added to ctdoctor's table since makes the (all-or-nothing) batch fail
// instead of vanishing with it.
func undoScript(objs []NftObject, now *ruleset) (script string, gone []NftObject) {
	var b strings.Builder
	for _, o := range slices.Backward(objs) {
		if o.Kind == "element" {
			if createdInBatch(objs, o) {
				continue
			}
			if _, set, ok := strings.Cut(o.Text, " element "); ok {
				fmt.Fprintf(&b, "delete element %s\n", set)
			}
			continue
		}
		if !now.has(o) {
			gone = append(gone, o)
			continue
		}
		switch o.Kind {
		case "rule":
			fmt.Fprintf(&b, "delete rule %s %s %s handle %d\n", o.Family, o.Table, o.Chain, o.Handle)
		case "table":
			fmt.Fprintf(&b, "delete table %s handle %d\n", o.Family, o.Handle)
		default:
			fmt.Fprintf(&b, "delete %s %s %s handle %d\n", o.Kind, o.Family, o.Table, o.Handle)
		}
	}
	return b.String(), gone
}

// newSince lists the objects of now that are not in before (both
// `nft -j list ruleset`): what appeared in between.
func newSince(before, now []byte) ([]string, error) {
	keys := func(b []byte) (map[string]bool, error) {
		rs, err := parseRuleset(b)
		if err != nil {
			return nil, err
		}
		return rs.objects, nil
	}
	kb, err := keys(before)
	if err != nil {
		return nil, err
	}
	kn, err := keys(now)
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range kn {
		if !kb[k] {
			f := strings.Split(k, "|")
			desc := fmt.Sprintf("%s %s %s", f[0], f[1], f[2])
			if f[4] != "" {
				desc += " " + f[4]
			}
			out = append(out, desc+" handle "+f[5])
		}
	}
	slices.Sort(out)
	return out, nil
}

// foreign lists what others put inside the tables and chains the batch
// created: deleting those would delete it too.
func foreign(objs []NftObject, now *ruleset) []string {
	ours := map[string]bool{}
	tables := map[string]bool{} // "family table tableHandle" created by the batch
	chains := map[string]bool{} // "family table tableHandle chain" created by the batch
	for _, o := range objs {
		ours[objKey(o.Kind, o.Family, o.Table, o.TableHandle, o.Chain, o.Handle)] = true
		switch o.Kind {
		case "table":
			tables[fmt.Sprintf("%s %s %d", o.Family, o.Table, o.Handle)] = true
		case "chain":
			chains[fmt.Sprintf("%s %s %d %s", o.Family, o.Table, o.TableHandle, o.Name)] = true
		}
	}
	var out []string
	for _, l := range now.list {
		if ours[objKey(l.kind, l.family, l.table, l.tableHandle, l.chain, l.handle)] {
			continue
		}
		inTable := tables[fmt.Sprintf("%s %s %d", l.family, l.table, l.tableHandle)]
		inChain := l.kind == "rule" && chains[fmt.Sprintf("%s %s %d %s", l.family, l.table, l.tableHandle, l.chain)]
		if inTable || inChain {
			what := fmt.Sprintf("%s in %s %s", l.kind, l.family, l.table)
			if l.kind == "rule" {
				what = fmt.Sprintf("rule in %s %s %s", l.family, l.table, l.chain)
			} else if l.name != "" {
				what += " " + l.name
			}
			out = append(out, fmt.Sprintf("%s (handle %d)", what, l.handle))
		}
	}
	return out
}
