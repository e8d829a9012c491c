package engine_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/engine"
)

// FuzzParseSetting: ParseSetting reads `--set` arguments and scenario
// settings, both typed by users. Any input gives a known setting with a
// value in its range, or an error with a message; an accepted setting
// reads back the same from its canonical "name=value" form.
func FuzzParseSetting(f *testing.F) {
	for _, s := range []string{
		"nf_conntrack_max=262144",
		"net.netfilter.nf_conntrack_tcp_timeout_established = 432000",
		"net/netfilter/nf_conntrack_buckets=65536",
		"net.nf_conntrack_max=1",
		"nf_conntrack_tcp_loose=0",
		"nf_conntrack_tcp_be_liberal=2",
		"nf_conntrack_udp_timeout=-1",
		"nf_conntrack_max=1073741825",
		"nf_conntrack_icmp_timeout=2147483",
		"nf_conntrack_icmp_timeout=2147484",
		"nf_conntrack_max",
		"=5",
		"nf_conntrack_maxx=5",
		"nf_conntrack_max=0x10",
		"nf_conntrack_max=99999999999999999999",
		" nf_conntrack_gre_timeout_stream =\t180 ",
	} {
		f.Add(s)
	}
	names := engine.SettingNames()
	f.Fuzz(func(t *testing.T, in string) {
		name, v, err := engine.ParseSetting(in)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseSetting(%q): empty error message", in)
			}
			if name != "" || v != 0 {
				t.Fatalf("ParseSetting(%q) = %q, %d with error %v", in, name, v, err)
			}
			return
		}
		if !strings.Contains(in, "=") {
			t.Fatalf("ParseSetting(%q) accepted an input without '='", in)
		}
		if !slices.Contains(names, name) {
			t.Fatalf("ParseSetting(%q) = unknown name %q", in, name)
		}
		switch name {
		case engine.SetMax, engine.SetBuckets:
			if v < 1 || v > 1<<30 {
				t.Fatalf("ParseSetting(%q) = %s=%d, out of range", in, name, v)
			}
		case engine.SetTCPLoose, engine.SetTCPBeLiberal:
			if v != 0 && v != 1 {
				t.Fatalf("ParseSetting(%q) = %s=%d, want 0 or 1", in, name, v)
			}
		default:
			if v < 0 || v > 1<<31/1000 {
				t.Fatalf("ParseSetting(%q) = %s=%d: a timeout that overflows the kernel's jiffies", in, name, v)
			}
		}
		n2, v2, err := engine.ParseSetting(name + "=" + strconv.FormatInt(v, 10))
		if err != nil || n2 != name || v2 != v {
			t.Fatalf("ParseSetting(%q) = %s=%d, which reads back as %q, %d, %v", in, name, v, n2, v2, err)
		}
	})
}
