package doctor_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
)

// LiveEntries replace the diagnosis's own listing of the live host: the
// breakdown counts the caller's entries (not the host's table), the
// report says they came from netlink, and they go with the live host only.
func TestLiveEntries(t *testing.T) {
	calls := 0
	src := func(fn func(*conntrack.Flow) error) error {
		calls++
		for i := range 3 {
			f := conntrack.Flow{Family: conntrack.IPv4, Proto: conntrack.UDP, Timeout: 30,
				Orig: conntrack.Tuple{Src: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Dst: netip.MustParseAddr("10.0.1.1"), SrcPort: 1000, DstPort: 53}}
			f.Reply = conntrack.Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: 53, DstPort: 1000}
			if err := fn(&f); err != nil {
				return err
			}
		}
		return nil
	}
	res, err := doctor.Run(context.Background(), doctor.Input{LiveEntries: src}, doctor.Options{NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot == nil {
		t.Skip("skipped: this host has no connection tracking")
	}
	if calls != 1 || res.Breakdown == nil || res.Breakdown.Total != 3 || res.Breakdown.L4["udp"] != 3 {
		t.Errorf("%d listings, breakdown %+v; want the 3 given UDP entries, listed once", calls, res.Breakdown)
	}
	if res.Report.Host.Source != "netlink" || res.Report.Listing == nil || !res.Report.Listing.Read {
		t.Errorf("source %q, listing %+v", res.Report.Host.Source, res.Report.Listing)
	}
	_, err = doctor.Run(context.Background(), doctor.Input{Root: "testdata/nowhere", LiveEntries: src}, doctor.Options{})
	if !errors.Is(err, doctor.ErrInput) {
		t.Errorf("LiveEntries with Root: %v, want ErrInput", err)
	}
}
