package watch_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ctdoctor/ctdoctor/watch"
)

// Watch the caller's namespace and print a line per refresh for ten
// seconds: the count against the limit, the mode, new entries and drops
// per second, and the largest TCP state.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := watch.Open(ctx, nil, false, watch.Options{Interval: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer src.Close()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, label := range src.Namespaces() {
			f, _ := src.Frame(label)
			switch {
			case f.Gone:
				fmt.Printf("%s: gone\n", label)
				continue
			case f.Err != "":
				fmt.Printf("%s: %s\n", label, f.Err)
				continue
			}
			top := ""
			if len(f.ByState) > 0 {
				top = fmt.Sprintf(", %s %d", f.ByState[0].Key, f.ByState[0].Entries)
			}
			fmt.Printf("%s: %d/%d entries (%s), %.0f new/s, %.0f drops/s%s\n",
				label, f.Count, f.Max, f.Mode, f.NewPerSec, f.DropPerSec, top)
		}
	}
}

// One complete frame per namespace — rates, breakdowns and diagnosis —
// then stop.
func ExampleOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frames, err := watch.Once(ctx, []string{"web1", "web2"}, false, watch.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	for _, f := range frames {
		verdict := "no diagnosis"
		if f.Report != nil {
			verdict = f.Report.Verdict.Level + ": " + f.Report.Verdict.Reason
		}
		fmt.Printf("%s: %.0f%% full, %s\n", f.NetNS, 100*f.Usage, verdict)
	}
}
