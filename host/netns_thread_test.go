package host

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestInNetNSLeavesNoThreadInside: after inNetNS returns, no thread of this
// process is left in the namespace. The runtime ends a locked thread when
// its goroutine exits, except the main thread, which it parks: parked in
// the namespace, it kept the namespace alive after `ip netns del` (and its
// inode number from being reused) for as long as the process ran.
func TestInNetNSLeavesNoThreadInside(t *testing.T) {
	ns := nstest.New(t)
	ino := ns.Inode()
	for range 50 {
		if err := InNetNS(ns.Path(), func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/ns/net", os.Getpid()))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads: %v %v", tasks, err)
	}
	for _, p := range tasks {
		if i, err := statInode(p); err == nil && i == ino {
			t.Errorf("%s is still in the namespace %s", p, ns.Name)
		}
	}
}
