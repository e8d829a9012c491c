package doctor_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/ctdoctor/ctdoctor/doctor"
)

// Diagnose a host through a root directory: here the repository's fixture
// of a Kubernetes node (3,072 entries in proc/net/nf_conntrack, max raised
// to 131,072 by kube-proxy). On a live host the Input is the zero value
// (or NetNS names a namespace) and Interval adds counter rates.
func ExampleDiagnose() {
	rep, err := doctor.Diagnose(context.Background(),
		doctor.Input{Root: "../host/testdata/hosts/k8s-node"},
		doctor.Options{Top: 5})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("entries:", rep.Table.Count, "of", rep.Table.Max)
	fmt.Println("listed:", rep.Breakdown.Total, "from", rep.Host.Source)
	fmt.Println("kube-proxy:", rep.Host.KubeProxy)
	// Output:
	// entries: 3072 of 131072
	// listed: 3072 from proc
	// kube-proxy: true
}

// Diagnose a bare listing, such as `conntrack -L` piped in: only the
// entries are known, not the table's size or counters.
func ExampleDiagnose_listing() {
	listing := `ipv4     2 tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=41430 dport=8080 packets=5 bytes=270 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=41430 packets=3 bytes=164 [ASSURED] mark=0 zone=0 delta-time=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=41432 dport=8080 packets=2 bytes=112 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=41432 packets=1 bytes=60 [ASSURED] mark=0 zone=0 delta-time=0 use=2
ipv4     2 udp      17 29 src=10.0.0.2 dst=10.0.0.53 sport=35306 dport=53 packets=1 bytes=29 [UNREPLIED] src=10.0.0.53 dst=10.0.0.2 sport=53 dport=35306 packets=0 bytes=0 mark=0 zone=0 delta-time=0 use=2
`
	rep, err := doctor.Diagnose(context.Background(),
		doctor.Input{Listing: strings.NewReader(listing), ListingName: "conntrack -L"},
		doctor.Options{})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	b := rep.Breakdown
	fmt.Println("entries:", b.Total, "tcp:", b.L4["tcp"], "udp:", b.L4["udp"], "loopback:", b.Loopback)
	fmt.Println("table size known:", rep.Table.Max > 0)
	// Output:
	// entries: 3 tcp: 2 udp: 1 loopback: 2
	// table size known: false
}

// Follow the listing of a large table: Progress is called when a stage
// starts, every ProgressEvery entries, and when it ends.
func ExampleOptions_progress() {
	var last doctor.Progress
	_, err := doctor.Diagnose(context.Background(),
		doctor.Input{Root: "../host/testdata/hosts/k8s-node"},
		doctor.Options{Progress: func(p doctor.Progress) { last = p }})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("%s: %d entries, done %v\n", last.Stage, last.Entries, last.Done)
	// Output:
	// reading entries: 3072 entries, done true
}
