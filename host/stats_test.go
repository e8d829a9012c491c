package host

import (
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Real files: 6.18 from the project's machine (note the double spaces the
// kernel prints after "entries" and "icmp_error"), 5.4 and 2.6.18 headers.
const (
	procStats618 = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000003  00000001 00000000 00000000 0000002a 00000000 00000000 00000000 00000003 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000007
00000003  00000000 00000002 00000000 00000000 00000000 00000000 00000004 00000000 00000005 00000006 00000008 00000009  00000000 00000000 00000000 00000000
`
	procStats54 = `entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0003fecd  00000000 00004739 00000000 00016009 002e04c5 00000000 00000000 00000000 00000000 0000bc53 001229c8 0000159b  00000000 00000000 00000000 00012d40
`
	procStats2618 = `entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete
00008daf  70d8277d 1c7f8403 008ce402 0000caa1 00126ddf 008c9e38 008c9e38 008ccbe4 00000000 0000181e 00000b58 000004d0  00000000 00000000 00000000
`
	conntrackS147 = "cpu=0   \tfound=0 invalid=42 insert=3 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=7 clash_resolve=1 chaintoolong=0 \n" +
		"cpu=1   \tfound=2 invalid=0 insert=0 insert_failed=5 drop=6 early_drop=8 error=9 search_restart=0 clash_resolve=0 chaintoolong=4 \n"
	// conntrack-tools 1.4.4 and older print every kernel counter.
	conntrackSOld = "cpu=0   \tsearched=0 found=12 new=0 invalid=3 ignore=77 delete=0 delete_list=0 insert=0 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=1 \n"
)

type want map[conntrack.StatField]uint64

func check(t *testing.T, got conntrack.Stats, w want, absent ...conntrack.StatField) {
	t.Helper()
	for f, v := range w {
		if g, ok := got.Get(f); !ok || g != v {
			t.Errorf("%s = %d (present %v), want %d", f, g, ok, v)
		}
	}
	for _, f := range absent {
		if got.Has(f) {
			t.Errorf("%s present, want absent", f)
		}
	}
}

func TestParseProcStats(t *testing.T) {
	st, err := ParseProcStats(strings.NewReader(procStats618))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("%d CPUs, want 2", len(st))
	}
	check(t, st[0], want{conntrack.StatEntries: 3, conntrack.StatClashResolve: 1, conntrack.StatInvalid: 42,
		conntrack.StatInsert: 3, conntrack.StatSearchRestart: 7}, conntrack.StatSearched, conntrack.StatDeleteList)
	check(t, st[1], want{conntrack.StatFound: 2, conntrack.StatChainTooLong: 4, conntrack.StatInsertFailed: 5,
		conntrack.StatDrop: 6, conntrack.StatEarlyDrop: 8, conntrack.StatError: 9})
	tot := conntrack.SumStats(st)
	check(t, tot, want{conntrack.StatEntries: 3, conntrack.StatInvalid: 42, conntrack.StatDrop: 6})

	st, err = ParseProcStats(strings.NewReader(procStats54))
	if err != nil {
		t.Fatal(err)
	}
	// searched and delete_list are read as themselves, never as clashres/chainlength.
	check(t, st[0], want{conntrack.StatEntries: 0x3fecd, conntrack.StatSearched: 0, conntrack.StatDeleteList: 0,
		conntrack.StatDrop: 0xbc53, conntrack.StatEarlyDrop: 0x1229c8, conntrack.StatSearchRestart: 0x12d40},
		conntrack.StatClashResolve, conntrack.StatChainTooLong)

	st, err = ParseProcStats(strings.NewReader(procStats2618))
	if err != nil {
		t.Fatal(err)
	}
	check(t, st[0], want{conntrack.StatEntries: 36271, conntrack.StatSearched: 0x70d8277d, conntrack.StatDrop: 6174,
		conntrack.StatDeleteList: 0x8c9e38, conntrack.StatNew: 0x8ce402}, conntrack.StatSearchRestart, conntrack.StatClashResolve)
}

func TestParseProcStatsUnknownColumn(t *testing.T) {
	in := "entries future_counter drop\n00000001 0000ffff 00000002\n"
	st, err := ParseProcStats(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	check(t, st[0], want{conntrack.StatEntries: 1, conntrack.StatDrop: 2})
}

func TestParseProcStatsErrors(t *testing.T) {
	lines := strings.Split(procStats618, "\n")
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"empty", "", "no header"},
		{"header only", lines[0] + "\n", "no CPU lines"},
		{"no header", lines[1] + "\n", "line 1: not a conntrack statistics header"},
		{"truncated last line", lines[0] + "\n" + lines[1] + "\n" + lines[2][:40] + "\n", "line 3: 5 columns, the header has 17"},
		{"ragged", lines[0] + "\n" + lines[1] + " 00000000\n", "line 2: 18 columns"},
		{"not hex", lines[0] + "\n" + strings.Replace(lines[1], "0000002a", "0000002g", 1) + "\n", "line 2, column 5 (invalid)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseProcStats(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseConntrackS(t *testing.T) {
	st, err := ParseConntrackS(strings.NewReader(conntrackS147))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("%d CPUs, want 2", len(st))
	}
	check(t, st[0], want{conntrack.StatInvalid: 42, conntrack.StatInsert: 3, conntrack.StatSearchRestart: 7, conntrack.StatClashResolve: 1},
		conntrack.StatEntries)
	check(t, st[1], want{conntrack.StatFound: 2, conntrack.StatInsertFailed: 5, conntrack.StatDrop: 6, conntrack.StatEarlyDrop: 8,
		conntrack.StatError: 9, conntrack.StatChainTooLong: 4})

	// The procfs file and `conntrack -S` of the same counters agree.
	pst, err := ParseProcStats(strings.NewReader(procStats618))
	if err != nil {
		t.Fatal(err)
	}
	for cpu := range st {
		for f := range conntrack.NumStatFields {
			if v, ok := st[cpu].Get(f); ok && v != pst[cpu].Values[f] {
				t.Errorf("cpu %d %s: conntrack -S %d, procfs %d", cpu, f, v, pst[cpu].Values[f])
			}
		}
	}

	st, err = ParseConntrackS(strings.NewReader(conntrackSOld))
	if err != nil {
		t.Fatal(err)
	}
	check(t, st[0], want{conntrack.StatFound: 12, conntrack.StatIgnore: 77, conntrack.StatSearched: 0, conntrack.StatSearchRestart: 1})
}

func TestParseConntrackSErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, wantErr string }{
		{"empty", "", "no statistics lines"},
		{"not key=value", "cpu=0 found=1 garbage\n", "line 1: \"garbage\" is not key=value"},
		{"not a number", "cpu=0 found=x\n", "line 1: found: not a number"},
		{"cpu out of range", "cpu=99999999 found=1\n", "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConntrackS(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseProcStats(f *testing.F) {
	for _, s := range []string{procStats618, procStats54, procStats2618, "entries drop\n1 2\n", "entries\n\n00000001\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseProcStats(strings.NewReader(string(data)))
		if err == nil && len(st) == 0 {
			t.Fatal("no error and no CPU lines")
		}
		_ = conntrack.SumStats(st)
		st2, err := ParseConntrackS(strings.NewReader(string(data)))
		if err == nil && len(st2) == 0 {
			t.Fatal("conntrack -S: no error and no CPU lines")
		}
	})
}
