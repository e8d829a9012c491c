package cli

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// childArgsEnv makes the test binary run ctdoctor itself: TestMain runs
// Main with the JSON-encoded arguments it holds and exits with its status.
const childArgsEnv = "CTDOCTOR_CLI_CHILD_ARGS"

func TestMain(m *testing.M) {
	if js := os.Getenv(childArgsEnv); js != "" {
		var args []string
		if err := json.Unmarshal([]byte(js), &args); err != nil {
			os.Stderr.WriteString("bad " + childArgsEnv + ": " + err.Error() + "\n")
			os.Exit(3)
		}
		os.Exit(Main(args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// childResult is what a ctdoctor run in a child process gave.
type childResult struct {
	code           int
	stdout, stderr string
}

// runAsNobody runs ctdoctor as user nobody (uid and gid 65534) in a child
// process, inside the network namespace at nsPath ("" for the test's own),
// with dir (world-writable) as its working directory. It skips the test
// unless it runs as root.
func runAsNobody(t *testing.T, nsPath, dir string, args ...string) childResult {
	t.Helper()
	nstest.Require(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary's build directory is private to root: run a copy.
	bindir, err := os.MkdirTemp("", "ctdoctor-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bindir) })
	if err := os.Chmod(bindir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(bindir, "ctdoctor.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(args)
	var cmd *exec.Cmd
	if nsPath != "" {
		if _, err := exec.LookPath("nsenter"); err != nil {
			t.Skip("skipped: nsenter is not installed (apt-get install util-linux)")
		}
		cmd = exec.Command("nsenter", "--net="+nsPath, "--setgid", "65534", "--setuid", "65534", "--", bin)
	} else {
		cmd = exec.Command(bin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(js), "NO_COLOR=1")
	cmd.Dir = dir
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	res := childResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run %v as nobody: %v\n%s", args, err, errb.String())
	}
	return res
}

// worldDir is a temporary directory user nobody can write to.
func worldDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to root: nobody must reach dir.
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
