// Command genflows prints a synthetic conntrack table in the format
// `conntrack -R` loads (see package flowgen for its mix):
//
//	go run ./internal/flowgen/cmd/genflows N [SEED] > flows.txt
//
// The same N and SEED (default 1) always print the same lines.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"

	"github.com/ctdoctor/ctdoctor/internal/flowgen"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: genflows N [SEED]   — N synthetic conntrack entries, `conntrack -R` format, on stdout")
		return 2
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "genflows: N must be a whole number ≥ 0, not %q\n", args[0])
		return 2
	}
	seed := uint64(1)
	if len(args) == 2 {
		if seed, err = strconv.ParseUint(args[1], 10, 64); err != nil {
			fmt.Fprintf(os.Stderr, "genflows: SEED must be a whole number ≥ 0, not %q\n", args[1])
			return 2
		}
	}
	w := bufio.NewWriter(os.Stdout)
	if err := flowgen.Write(w, n, seed); err != nil {
		fmt.Fprintln(os.Stderr, "genflows:", err)
		return 1
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "genflows:", err)
		return 1
	}
	return 0
}
