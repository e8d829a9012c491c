package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/flowgen"
)

// The command prints what the library writes, and rejects bad arguments
// with exit status 2.
func TestCommand(t *testing.T) {
	if os.Getenv("GENFLOWS_HELPER") == "1" {
		os.Exit(run(os.Args[len(os.Args)-2:]))
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(args ...string) *exec.Cmd {
		c := exec.Command(exe, append([]string{"-test.run=^TestCommand$", "--"}, args...)...)
		c.Env = append(os.Environ(), "GENFLOWS_HELPER=1")
		return c
	}
	out, err := cmd("300", "9").Output()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := flowgen.Write(&want, 300, 9); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want.Bytes()) {
		t.Errorf("genflows 300 9 prints something else than flowgen.Write(300, 9)")
	}
	for _, args := range [][]string{{"x", "1"}, {"-5", "1"}, {"10", "y"}} {
		err := cmd(args...).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("genflows %v: %v, want exit status 2", args, err)
		}
	}
}
