package test

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/testenv"
)

// TestMakeRunWithoutACluster runs `make run` the way a newcomer would on a
// machine with no kubeconfig: it must start a local control plane, sync the
// example repository to Synced, print what to try next, and stop everything
// on Ctrl-C.
func TestMakeRunWithoutACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second control plane")
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	env := []string{"HOME=" + home, "KUBECONFIG=", "KUBEBUILDER_ASSETS=" + assets, "PATH=" + os.Getenv("PATH")}
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOPROXY", "GOTOOLCHAIN"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, v+"="+strings.TrimSpace(string(out)))
	}
	// make run builds first. A cold build takes minutes on 2 cores, so it
	// happens here, outside the deadline below; make run then finds it all
	// in the build cache.
	build := exec.Command("make", "--no-print-directory", "build", "devcluster")
	build.Dir, build.Env = testenv.RepoRoot(), env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build devcluster: %v\n%s", err, out)
	}
	state := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "run",
		"RUN_ARGS=--state "+state+" -- --webhook-addr "+freeAddr(t)+" --metrics-addr "+freeAddr(t)+" --health-addr "+freeAddr(t))
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	deadline := time.After(4 * time.Minute)
	synced := false
	for !synced {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("make run ended before the example synced:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			synced = strings.Contains(l, "GitRepository default/examples is Synced")
		case <-deadline:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("the example did not reach Synced:\n%s", strings.Join(seen, "\n"))
		}
	}
	// Ctrl-C stops the controller and the control plane.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for l := range lines {
			seen = append(seen, l)
		}
		done <- cmd.Wait()
	}()
	var waitErr error
	select {
	case waitErr = <-done:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("make run did not stop within 60s of Ctrl-C:\n%s", strings.Join(seen, "\n"))
	}
	out := strings.Join(seen, "\n")
	for _, want := range []string{"starting a local control plane", "kubectl get gitrepositories", "Stopping the local control plane", "Stopped: "} {
		if !strings.Contains(out, want) {
			t.Fatalf("make run output lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"context canceled", "exit status", "Error 1", "make run:"} {
		if strings.Contains(out, bad) {
			t.Fatalf("make run reported %q after a clean Ctrl-C:\n%s", bad, out)
		}
	}
	// make itself got the SIGINT too: it exits 0, or by that signal as
	// every program does on Ctrl-C (the shell shows 130), never with an
	// error status of its own.
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); waitErr != nil && (!ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT) {
		t.Fatalf("make run ended with %v after Ctrl-C, want exit 0 (or SIGINT itself)", waitErr)
	}
}
