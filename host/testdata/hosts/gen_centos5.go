//go:build ignore

// gen_centos5 writes centos5/proc/net/ip_conntrack.gz: the 36271 entries of
// the CentOS 5 web server of an operator's field report (2.6.18 ip_conntrack, no layer-3 columns,
// accounting and secmark on as in RHEL 5 kernels), deterministically.
//
//	go run gen_centos5.go            # from host/testdata/hosts
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
)

const (
	entries = 36271 // the count the report gives
	server  = "203.0.113.10"
)

func main() {
	out, err := os.Create("centos5/proc/net/ip_conntrack.gz")
	if err != nil {
		log.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestCompression)
	zw.ModTime = zw.ModTime.UTC() // zero: reproducible bytes
	w := bufio.NewWriter(zw)
	rng := rand.New(rand.NewPCG(4, 2009))
	client := func() string {
		if rng.IntN(3) == 0 {
			return fmt.Sprintf("192.0.2.%d", 1+rng.IntN(254))
		}
		return fmt.Sprintf("198.51.100.%d", 1+rng.IntN(254))
	}
	for i := 0; i < entries; i++ {
		c := client()
		sport := 1024 + rng.IntN(64511)
		p := rng.IntN(100)
		switch {
		case p < 62: // idle keep-alive connections whose RST never arrived: 5-day timeout
			pk, rpk := 5+rng.IntN(40), 4+rng.IntN(60)
			fmt.Fprintf(w, "tcp      6 %d ESTABLISHED src=%s dst=%s sport=%d dport=80 packets=%d bytes=%d src=%s dst=%s sport=80 dport=%d packets=%d bytes=%d [ASSURED] mark=0 secmark=0 use=1\n",
				1+rng.IntN(432000), c, server, sport, pk, pk*(60+rng.IntN(500)), server, c, sport, rpk, rpk*(200+rng.IntN(1200)))
		case p < 80:
			fmt.Fprintf(w, "tcp      6 %d TIME_WAIT src=%s dst=%s sport=%d dport=80 packets=%d bytes=%d src=%s dst=%s sport=80 dport=%d packets=%d bytes=%d [ASSURED] mark=0 secmark=0 use=1\n",
				1+rng.IntN(120), c, server, sport, 6+rng.IntN(6), 400+rng.IntN(2000), server, c, sport, 5+rng.IntN(8), 800+rng.IntN(20000))
		case p < 90:
			fmt.Fprintf(w, "tcp      6 %d SYN_RECV src=%s dst=%s sport=%d dport=80 packets=1 bytes=60 src=%s dst=%s sport=80 dport=%d packets=%d bytes=%d mark=0 secmark=0 use=1\n",
				1+rng.IntN(60), c, server, sport, server, c, sport, 1+rng.IntN(5), 44*(1+rng.IntN(5)))
		case p < 93:
			fmt.Fprintf(w, "tcp      6 %d FIN_WAIT src=%s dst=%s sport=%d dport=80 packets=%d bytes=%d src=%s dst=%s sport=80 dport=%d packets=%d bytes=%d [ASSURED] mark=0 secmark=0 use=1\n",
				1+rng.IntN(120), c, server, sport, 6+rng.IntN(6), 400+rng.IntN(2000), server, c, sport, 5+rng.IntN(8), 800+rng.IntN(20000))
		case p < 95:
			fmt.Fprintf(w, "tcp      6 %d ESTABLISHED src=%s dst=%s sport=%d dport=22 packets=%d bytes=%d src=%s dst=%s sport=22 dport=%d packets=%d bytes=%d [ASSURED] mark=0 secmark=0 use=1\n",
				1+rng.IntN(432000), c, server, sport, 50+rng.IntN(5000), 5000+rng.IntN(500000), server, c, sport, 50+rng.IntN(5000), 5000+rng.IntN(900000))
		case p < 99: // the server's own DNS lookups
			port := 32768 + rng.IntN(28232)
			dns := "192.0.2.53"
			if rng.IntN(2) == 0 {
				fmt.Fprintf(w, "udp      17 %d src=%s dst=%s sport=%d dport=53 packets=1 bytes=%d src=%s dst=%s sport=53 dport=%d packets=1 bytes=%d mark=0 secmark=0 use=1\n",
					1+rng.IntN(30), server, dns, port, 60+rng.IntN(20), dns, server, port, 100+rng.IntN(200))
			} else {
				fmt.Fprintf(w, "udp      17 %d src=%s dst=%s sport=%d dport=53 packets=1 bytes=%d [UNREPLIED] src=%s dst=%s sport=53 dport=%d packets=0 bytes=0 mark=0 secmark=0 use=1\n",
					1+rng.IntN(30), server, dns, port, 60+rng.IntN(20), dns, server, port)
			}
		default:
			id := rng.IntN(65536)
			fmt.Fprintf(w, "icmp     1 %d src=%s dst=%s type=8 code=0 id=%d packets=1 bytes=84 src=%s dst=%s type=0 code=0 id=%d packets=1 bytes=84 mark=0 secmark=0 use=1\n",
				1+rng.IntN(30), c, server, id, server, c, id)
		}
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	if err := out.Close(); err != nil {
		log.Fatal(err)
	}
}
