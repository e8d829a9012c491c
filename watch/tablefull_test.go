package watch

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestTableFullLive fills a namespace of its own to the global
// nf_conntrack_max and makes the kernel drop packets: the frame shows
// the table full (usage 1, time to full 0), drops per second, and the
// kernel's "table full in netns N" lines as they arrive, attributed to
// the namespace. Opt-in (CTDOCTOR_TABLEFULL_TEST=1): the lines go to the
// host's kernel log.
func TestTableFullLive(t *testing.T) {
	if os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Skip("skipped: set CTDOCTOR_TABLEFULL_TEST=1 (fills a test netns to nf_conntrack_max and writes \"table full\" lines to the kernel log)")
	}
	ns := nstest.New(t, "conntrack", "nft", "ping")
	ns.Track()
	limit := nstest.GlobalMax(t)
	ns.FillAssured(limit)
	src, err := Open(t.Context(), []string{ns.Name}, false, Options{Interval: 200 * time.Millisecond, NoReport: true, ListEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w := src.(*Watch)
	waitListed(t, w, ns.Name)
	want := fmt.Sprintf("table full in netns %d, dropping packet", ns.Inode())
	// The kernel rate-limits its line (net_ratelimit: 10 per 5 s, shared
	// host-wide): a ping every 2 s for up to 30 s outlasts that.
	pinged := make(chan error, 100)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			out, err := ns.Output("ping", "-c1", "-W1", "127.0.0.1")
			if err == nil {
				err = fmt.Errorf("ping got through a full table:\n%s", out)
			} else {
				err = nil
			}
			pinged <- err
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	// A refresh's rate counts the drops within it: the highest rate read.
	var f Frame
	var drops float64
	deadline := time.Now().Add(30 * time.Second)
	for len(f.KernelLog) == 0 || drops <= 0 {
		select {
		case err := <-pinged:
			if err != nil {
				t.Fatal(err)
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s of drops: kernel log %+v (%s), drops/s %.1f", f.KernelLog, f.KernelLogError, drops)
		}
		time.Sleep(50 * time.Millisecond)
		f, _ = w.Frame(ns.Name)
		drops = max(drops, f.DropPerSec)
	}
	ev := f.KernelLog[len(f.KernelLog)-1]
	if !strings.HasSuffix(ev.Message, want) || ev.Count < 1 || time.Since(ev.Time).Abs() > time.Minute {
		t.Errorf("kernel log event %+v, want …%s, a count and a recent time", ev, want)
	}
	if f.Count != int64(limit) || f.Usage != 1 || f.TimeToFull != 0 {
		t.Errorf("count %d of %d, usage %.3f, time to full %v; want full: 1 and 0", f.Count, limit, f.Usage, f.TimeToFull)
	}
	t.Logf("drops/s %.1f, kernel log %+v", drops, f.KernelLog)
}
