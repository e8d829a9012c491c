package sim

import (
	"math/rand/v2"
	"testing"
)

// TestWheelFiresEveryEntryAtItsTick schedules entries from the current
// tick to weeks ahead (every level and the far heap), then walks the wheel
// the way Run does — jumping to next() — and checks each fires exactly at
// its tick, never earlier or later, and nothing is lost.
func TestWheelFiresEveryEntryAtItsTick(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var w wheel
	want := map[uint32]int64{}
	next := uint32(0)
	add := func(at int64) {
		idx := next
		next++
		want[idx] = at
		w.add(at, idx)
	}
	spans := []int64{1, wheelSize, wheelSize * wheelSize, wheelSize * wheelSize * wheelSize, 4 * wheelSize * wheelSize * wheelSize}
	for i := 0; i < 20000; i++ {
		add(rng.Int64N(spans[i%len(spans)]))
	}
	fired := 0
	for steps := 0; w.len() > 0; steps++ {
		if steps > 10_000_000 {
			t.Fatal("the wheel does not drain")
		}
		list := w.take()
		for _, idx := range list {
			if want[idx] != w.now {
				t.Fatalf("entry %d due at %d fired at %d", idx, want[idx], w.now)
			}
			delete(want, idx)
			fired++
			// Entries scheduled while running: some for now, some later.
			if fired%7 == 0 && fired < 30000 {
				add(w.now + rng.Int64N(spans[fired%len(spans)]))
			}
		}
		w.done(list)
		if len(w.l0[w.now&wheelMask]) > 0 {
			continue // scheduled for the current tick while running it
		}
		n := w.next()
		if n < 0 {
			break
		}
		if n <= w.now {
			n = w.now + 1
		}
		w.advance(n)
	}
	if len(want) != 0 {
		t.Fatalf("%d entries never fired (%d did)", len(want), fired)
	}
}
