package ctnetlink

import (
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzDecodeEvents feeds arbitrary datagrams to the event decoder: it
// must never panic, deliver at most one event per message, and hand out
// only the three event types.
func FuzzDecodeEvents(f *testing.F) {
	newMsg, stateUpd, statusUpd, destroy := eventMsgs()
	f.Add(newMsg)
	f.Add(concat(newMsg, stateUpd, statusUpd, destroy))
	f.Add(concat(destroy, ctrlmsg(unix.NLMSG_ERROR, 0, 0, -int32(unix.ENOBUFS))))
	f.Add(tcpFlow(0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs := 0
		for rest := b; len(rest) > 0; msgs++ {
			_, _, r, err := nextMsg(rest)
			if err != nil {
				break
			}
			rest = r
		}
		var d decoder
		var ev Event
		delivered := 0
		n, _ := decodeEvents(b, &d, &ev, func(e *Event) {
			delivered++
			if e.Type < EventNew || e.Type > EventDestroy {
				t.Fatalf("event type %d", e.Type)
			}
			_ = e.Flow.AppendConntrack(nil)
		})
		if n != delivered || n > msgs {
			t.Fatalf("decodeEvents = %d, delivered %d, %d messages", n, delivered, msgs)
		}
	})
}
