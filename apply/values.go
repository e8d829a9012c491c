package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// norm compares sysctl values as the kernel prints them: fields separated
// by any whitespace ("4096\t16384" equals "4096 16384").
func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

// readValue reads a sysctl or module parameter, from inside nsPath.
func readValue(file, nsPath string) (string, error) {
	var v string
	err := inNS(nsPath, func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s does not exist (is the nf_conntrack module loaded?): %w", file, err)
			}
			return err
		}
		v = string(b)
		return nil
	})
	return v, err
}

// writableHere reports why a sysctl or module parameter cannot be written
// from nsPath ("" when it can).
func writableHere(file, nsPath string) string {
	var why string
	_ = inNS(nsPath, func() error {
		if err := unix.Access(file, unix.W_OK); err != nil {
			why = err.Error()
			if strings.HasPrefix(file, "/proc/sys/net/") && nsPath != "" && nsPath != initNetNSPath {
				why += " (outside the initial network namespace some conntrack settings, such as nf_conntrack_max and nf_conntrack_buckets, are read-only: change them in a plan with global steps)"
			}
		}
		return nil
	})
	return why
}

// writeValue writes a sysctl or module parameter from inside nsPath, in
// one write(2) as `sysctl -w` does, and reads it back.
func writeValue(file, nsPath, value string) (readBack string, err error) {
	err = inNS(nsPath, func() error {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte(value + "\n"))
		cerr := f.Close()
		if werr != nil {
			return fmt.Errorf("write %q to %s: %w", value, file, werr)
		}
		if cerr != nil {
			return fmt.Errorf("write %q to %s: %w", value, file, cerr)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read back %s: %w", file, err)
		}
		readBack = string(b)
		return nil
	})
	return readBack, err
}

// runCmd runs argv on a thread inside nsPath, so the process lives in the
// namespace, in a process group of its own (a signal to ctdoctor's group
// — Ctrl-C, a dying SSH session — does not stop nft halfway through
// writing what it did). stdout may be nil.
func runCmd(nsPath string, argv []string, stdin string, stdout io.Writer) error {
	return inNS(nsPath, func() error {
		cmd := exec.Command(argv[0], argv[1:]...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		var stderr bytes.Buffer
		cmd.Stdout = stdout
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if msg != "" {
				return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
			}
			return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		return nil
	})
}
