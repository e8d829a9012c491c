package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/ctdoctor/ctdoctor/engine"
)

// fuzzCaptures are small captures for the fuzz seeds: the first records of
// the committed loopback capture (pcap, pcapng, gzip'd) and the same
// frames in other link types.
func fuzzCaptures(f *testing.F) [][]byte {
	pcap, err := os.ReadFile(committedPcap)
	if err != nil {
		f.Fatal(err)
	}
	pcapng, err := os.ReadFile(committedPcapng)
	if err != nil {
		f.Fatal(err)
	}
	// The first 8 records of the pcap: 24-byte header, 16-byte record headers.
	end := 24
	for range 8 {
		end += 16 + int(binary.LittleEndian.Uint32(pcap[end+8:]))
	}
	head := pcap[:end]
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(head)
	_ = zw.Close()
	out := [][]byte{head, pcapng[:min(len(pcapng), 1200)], gz.Bytes(), nil, []byte("GET / HTTP/1.1\r\n"), pcap[:24]}
	frames := readCapFrames(f, head)
	for _, lt := range []int{linkRaw, linkLinuxSLL, linkLinuxSLL2, linkNull, linkLoop} {
		var b bytes.Buffer
		if err := writePcap(&b, relink(f, frames[:4], lt), 1<<16, layers.LinkType(lt)); err != nil {
			f.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

// FuzzReplayPCAP: a capture file is untrusted input. Any bytes give
// statistics that add up (every record read is tracked or skipped, but for
// one that ends the replay with an error; every tracked packet has a
// verdict) and, when they cannot be read, an error with a message; never
// a panic, and never more entries than tracked packets.
func FuzzReplayPCAP(f *testing.F) {
	for _, b := range fuzzCaptures(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vc := &engine.VirtualClock{}
		tr, err := engine.New(engine.Config{Clock: vc, Seed: 1,
			Settings: map[string]int64{engine.SetMax: 4096, engine.SetBuckets: 1024}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := ReplayPCAP(bytes.NewReader(data), tr, vc, ReplayOptions{Hook: engine.Output})
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
		// Every record read is tracked or skipped, except the one whose
		// error (an unsupported link type, an unknown pcapng interface)
		// ends the replay.
		if n := st.Packets - st.Decoded - st.Skipped; n != 0 && (err == nil || n != 1) {
			t.Fatalf("%d records read, %d tracked + %d skipped, error %v", st.Packets, st.Decoded, st.Skipped, err)
		}
		sum := func(m map[string]int) int {
			n := 0
			for _, v := range m {
				n += v
			}
			return n
		}
		if n := sum(st.Verdicts); n != st.Decoded {
			t.Fatalf("%d verdicts for %d tracked packets: %v", n, st.Decoded, st.Verdicts)
		}
		if n := sum(st.SkipReasons); n != st.Skipped {
			t.Fatalf("%d skip reasons for %d skipped records: %v", n, st.Skipped, st.SkipReasons)
		}
		if c := tr.Count(); c > st.Decoded {
			t.Fatalf("%d entries from %d tracked packets", c, st.Decoded)
		}
		if st.Packets > 0 && st.Duration != st.Last.Sub(st.First) {
			t.Fatalf("duration %v, first %v, last %v", st.Duration, st.First, st.Last)
		}
	})
}
