package apply_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ctdoctor/ctdoctor/apply"
)

// Apply a plan written by `ctdoctor plan -o json`, keeping it only if it
// is confirmed within two minutes, then list what was applied.
func Example() {
	p, err := apply.ReadPlanFile("plan.json")
	if err != nil {
		fmt.Println(err) // ErrBadPlan: truncated, not JSON, unsafe action…
		return
	}
	opt := apply.Options{StateDir: apply.DefaultStateDir, Yes: true, Out: os.Stdout, ConfirmWithin: 2 * time.Minute}
	res, err := apply.Apply(context.Background(), p, opt)
	switch {
	case errors.Is(err, apply.ErrStale), errors.Is(err, apply.ErrWrongHost):
		fmt.Println("make a new plan:", err)
		return
	case err != nil:
		fmt.Println(err) // ErrFailed says whether the undo finished
		return
	}
	// … check the service, then keep the change (the watchdog reverts it
	// at res.ConfirmBy otherwise):
	if _, err := apply.Confirm(res.ID, opt); err != nil {
		fmt.Println(err)
	}
	entries, _ := apply.History(opt.StateDir)
	for _, e := range entries {
		fmt.Println(e.ID, e.State, e.Summary)
	}
}
