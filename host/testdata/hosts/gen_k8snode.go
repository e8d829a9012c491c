//go:build ignore

// gen_k8snode writes k8s-node/proc/net/nf_conntrack: the table of a
// kubeadm worker (flannel pod CIDR 10.244.0.0/16, services 10.96.0.0/12,
// node 192.168.10.22) with kube-proxy's NAT: DNAT to pods for ClusterIP
// services, SNAT (masquerade) for pod egress, both for NodePort traffic.
// Deterministic; the count is printed for the fixture's sysctls.
//
//	go run gen_k8snode.go            # from host/testdata/hosts
package main

import (
	"bufio"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

const entries = 3072

var (
	node      = netip.MustParseAddr("192.168.10.22")
	apiserver = netip.MustParseAddr("192.168.10.10")
	flannel   = netip.MustParseAddr("10.244.1.0") // this node's flannel.1 address
)

func main() {
	out, err := os.Create("k8s-node/proc/net/nf_conntrack")
	if err != nil {
		log.Fatal(err)
	}
	w := bufio.NewWriter(out)
	rng := rand.New(rand.NewPCG(8, 1234))
	localPod := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + rng.IntN(60))}) }
	remotePod := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, 244, byte(rng.IntN(4)), byte(2 + rng.IntN(60))})
	}
	eph := func() uint16 { return uint16(32768 + rng.IntN(28231)) }
	services := []struct {
		ip   netip.Addr
		port uint16
	}{
		{netip.MustParseAddr("10.96.0.10"), 53}, {netip.MustParseAddr("10.96.112.7"), 8080},
		{netip.MustParseAddr("10.101.44.3"), 5432}, {netip.MustParseAddr("10.108.9.200"), 6379},
		{netip.MustParseAddr("10.96.0.1"), 443},
	}
	var buf []byte
	for i := 0; i < entries; i++ {
		f := conntrack.Flow{Family: conntrack.IPv4, Status: conntrack.StatusConfirmed | conntrack.StatusSeenReply, Use: 2}
		p := rng.IntN(100)
		switch {
		case p < 30: // DNS to kube-dns: DNAT to a CoreDNS pod
			f.Proto = conntrack.UDP
			f.Timeout = uint32(1 + rng.IntN(30))
			src, sp := localPod(), eph()
			dns := netip.AddrFrom4([4]byte{10, 244, byte(rng.IntN(2)), 3})
			f.Orig = conntrack.Tuple{Src: src, Dst: services[0].ip, SrcPort: sp, DstPort: 53}
			f.Reply = conntrack.Tuple{Src: dns, Dst: src, SrcPort: 53, DstPort: sp}
			if rng.IntN(12) == 0 { // lost to the DNAT race (insert_failed)
				f.Status &^= conntrack.StatusSeenReply
			}
		case p < 65: // pod to ClusterIP service over TCP: DNAT
			s := services[1+rng.IntN(len(services)-1)]
			src, sp := localPod(), eph()
			dst := remotePod()
			dport := s.port
			if s.port == 443 {
				dst, dport = apiserver, 6443
			}
			f.Proto = conntrack.TCP
			f.Orig = conntrack.Tuple{Src: src, Dst: s.ip, SrcPort: sp, DstPort: s.port}
			f.Reply = conntrack.Tuple{Src: dst, Dst: src, SrcPort: dport, DstPort: sp}
			if s.port == 443 && dst == apiserver { // apiserver is off the pod network: masqueraded
				f.Reply.Dst = node
			}
			setTCP(&f, rng)
		case p < 85: // pod egress to the internet: SNAT (masquerade) to the node
			src, sp := localPod(), eph()
			ext := netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + rng.IntN(254))})
			f.Proto = conntrack.TCP
			f.Orig = conntrack.Tuple{Src: src, Dst: ext, SrcPort: sp, DstPort: 443}
			np := sp
			if rng.IntN(3) == 0 {
				np = eph() // port clash: kube-proxy's --random-fully picks another
			}
			f.Reply = conntrack.Tuple{Src: ext, Dst: node, SrcPort: 443, DstPort: np}
			setTCP(&f, rng)
		case p < 95: // NodePort from outside: DNAT to a pod and SNAT to flannel.1
			cl := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + rng.IntN(254))})
			sp, mp := eph(), eph()
			f.Proto = conntrack.TCP
			f.Orig = conntrack.Tuple{Src: cl, Dst: node, SrcPort: sp, DstPort: 30080}
			f.Reply = conntrack.Tuple{Src: remotePod(), Dst: flannel, SrcPort: 8080, DstPort: mp}
			setTCP(&f, rng)
		default: // kubelet to the apiserver, not NATed
			f.Proto = conntrack.TCP
			sp := eph()
			f.Orig = conntrack.Tuple{Src: node, Dst: apiserver, SrcPort: sp, DstPort: 6443}
			f.Reply = conntrack.Tuple{Src: apiserver, Dst: node, SrcPort: 6443, DstPort: sp}
			f.State = uint8(conntrack.TCPEstablished)
			f.Status |= conntrack.StatusAssured
			f.Timeout = uint32(86300 + rng.IntN(100))
		}
		buf = f.AppendProc(buf[:0])
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := out.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(entries)
}

func setTCP(f *conntrack.Flow, rng *rand.Rand) {
	switch p := rng.IntN(10); {
	case p < 5:
		f.State = uint8(conntrack.TCPEstablished)
		f.Status |= conntrack.StatusAssured
		f.Timeout = uint32(1 + rng.IntN(86400)) // kube-proxy's 1-day established timeout
	case p < 9:
		f.State = uint8(conntrack.TCPTimeWait)
		f.Status |= conntrack.StatusAssured
		f.Timeout = uint32(1 + rng.IntN(120))
	default:
		f.State = uint8(conntrack.TCPCloseWait)
		f.Status |= conntrack.StatusAssured
		f.Timeout = uint32(1 + rng.IntN(3600))
	}
}
