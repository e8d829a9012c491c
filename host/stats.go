package host

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// maxStatCPUs bounds the per-CPU lines a stats parser accepts (the kernel
// prints one per possible CPU; NR_CPUS is at most 8192).
const maxStatCPUs = 8192

// ParseProcStats parses /proc/net/stat/nf_conntrack (or the legacy
// /proc/net/stat/ip_conntrack): a header line naming the columns, then one
// line of 8-digit hexadecimal counters per possible CPU. Columns are
// matched BY NAME (old kernels have "searched" and "delete_list" where new
// ones have "clashres" and "chainlength"); unknown columns are ignored. A
// line whose column count differs from the header's, or a value that is not
// hexadecimal, is an error naming the line.
func ParseProcStats(r io.Reader) ([]conntrack.Stats, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	var (
		cols   []int // field per column, -1 for unknown
		out    []conntrack.Stats
		lineNo int
	)
	for sc.Scan() {
		lineNo++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if cols == nil {
			known := 0
			cols = make([]int, len(fields))
			for i, name := range fields {
				cols[i] = -1
				if f, ok := conntrack.StatFieldByHeader(name); ok {
					cols[i] = int(f)
					known++
				}
			}
			if known == 0 {
				return nil, fmt.Errorf("line %d: not a conntrack statistics header (no known column among %d): %q", lineNo, len(fields), shorten(sc.Text()))
			}
			continue
		}
		if len(fields) != len(cols) {
			return out, fmt.Errorf("line %d: %d columns, the header has %d (truncated or ragged line): %q", lineNo, len(fields), len(cols), shorten(sc.Text()))
		}
		if len(out) >= maxStatCPUs {
			return out, fmt.Errorf("line %d: more than %d CPU lines", lineNo, maxStatCPUs)
		}
		var st conntrack.Stats
		for i, tok := range fields {
			v, err := strconv.ParseUint(tok, 16, 64)
			if err != nil {
				return out, fmt.Errorf("line %d, column %d (%s): not a hexadecimal counter: %q", lineNo, i+1, headerName(cols[i]), tok)
			}
			if cols[i] >= 0 {
				st.Set(conntrack.StatField(cols[i]), v)
			}
		}
		out = append(out, st)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("line %d: %w", lineNo+1, err)
	}
	if cols == nil {
		return nil, errors.New("empty statistics file: no header")
	}
	if len(out) == 0 {
		return nil, errors.New("statistics file has a header but no CPU lines")
	}
	return out, nil
}

func headerName(f int) string {
	if f < 0 {
		return "unknown column"
	}
	return conntrack.StatField(f).String()
}

// ParseConntrackS parses the output of `conntrack -S`: one line per CPU of
// key=value pairs ("cpu=0   \tfound=0 invalid=12 insert=0 insert_failed=0
// drop=0 early_drop=0 error=0 search_restart=3 clash_resolve=0
// chaintoolong=0"). Old conntrack-tools print more keys (searched, new,
// delete_list …); unknown keys are ignored. Lines are placed by their cpu=
// number; a line without one takes the next index.
func ParseConntrackS(r io.Reader) ([]conntrack.Stats, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	var (
		out    []conntrack.Stats
		lineNo int
	)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.Contains(line, "(conntrack-tools)") {
			continue
		}
		var st conntrack.Stats
		cpu := -1
		for _, tok := range strings.Fields(line) {
			k, v, ok := strings.Cut(tok, "=")
			if !ok || k == "" {
				return out, fmt.Errorf("line %d: %q is not key=value: %q", lineNo, tok, shorten(line))
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return out, fmt.Errorf("line %d: %s: not a number: %q", lineNo, k, v)
			}
			if k == "cpu" {
				if n >= maxStatCPUs {
					return out, fmt.Errorf("line %d: cpu=%d out of range", lineNo, n)
				}
				cpu = int(n)
				continue
			}
			if f, ok := conntrack.StatFieldByHeader(k); ok {
				st.Set(f, n)
			}
		}
		if cpu < 0 {
			cpu = len(out)
		}
		if cpu >= maxStatCPUs {
			return out, fmt.Errorf("line %d: more than %d CPU lines", lineNo, maxStatCPUs)
		}
		for len(out) <= cpu {
			out = append(out, conntrack.Stats{})
		}
		out[cpu] = st
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("line %d: %w", lineNo+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("no statistics lines (expected `conntrack -S` output: cpu=0 found=0 …)")
	}
	return out, nil
}

func shorten(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
