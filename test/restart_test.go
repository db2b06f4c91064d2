package test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestAPIServerRestartedMidSync restarts kube-apiserver itself (the process,
// not a proxy in front of it) while the controller applies a 300-object
// commit that also deletes a file. It runs on a control plane of its own,
// so that the restart touches no other test. The controller must stay up
// and converge: every object at the new commit, the deleted file's object
// pruned, nothing else deleted.
func TestAPIServerRestartedMidSync(t *testing.T) {
	cp, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	kubeconfig, err := cp.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cp.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	// The controller reaches this API server through a proxy that can slow
	// it, so that the restart lands mid-apply.
	proxy := newTCPProxy(t, u.Host)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, bytes.ReplaceAll(kubeconfig, []byte(u.Host), []byte(proxy.addr)), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	const ns = "restart"
	if _, err := cp.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	repo := gitserver.New(t).CreateRepo(t, "big")
	files := bigRepoFiles(ns, "1")
	files["gone.yaml"] = configMapYAML("gone", ns, "1")
	commit := repo.CommitStrings("first", files)
	ctrl := startController(t, "--watch-namespace", ns, "--kubeconfig", kcPath, "--webhook-secret-file", secretFile(t))
	ctrl.waitReady(t)
	if _, err := cp.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(ctx,
		gitRepo(ns, "big", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, cp, ns, "big", commit)

	proxy.slow(20 * time.Millisecond)
	files = bigRepoFiles(ns, "2")
	files["gone.yaml"] = ""
	commit = repo.CommitStrings("second", files)
	pushBigCommit(t, ctrl.webhook, repo, commit, func() string { return valueOn(cp, ns, "cm-00-0") })
	restartAPIServer(t, cp, u.Port())
	if v := valueOn(cp, ns, "cm-29-9"); v == "2" {
		t.Fatal("the apply finished before the restart: the test proves nothing; slow the proxy more")
	}
	proxy.slow(0)

	waitSyncedOn(t, cp, ns, "big", commit)
	want := bigRepoObjects("2")
	testenv.Eventually(t, time.Minute, func() error {
		list, err := cp.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelName})
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, cm := range list.Items {
			got[cm.Name] = cm.Data["value"]
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d managed ConfigMaps, want %d (gone pruned, the 300 kept)", len(got), len(want))
		}
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s = %q, want %q", name, got[name], v)
			}
		}
		return nil
	})
	select {
	case err := <-ctrl.done:
		ctrl.done <- err
		t.Fatalf("the controller exited during the API server's restart: %v", err)
	default:
	}
	// Stopped here, while the API server still runs, so that its shutdown
	// is not slowed by an API server the cleanup already stopped.
	if err, _ := ctrl.stop(t); err != nil {
		t.Fatalf("the controller's exit after the restart: %v", err)
	}
}

// restartAPIServer stops the control plane's kube-apiserver (the process
// serving port) with SIGTERM and starts it again with the same command
// line, so the same port, certificates and etcd: to every client it is the
// same server, restarted. The cleanup stops the new process.
func restartAPIServer(t *testing.T, cp *testenv.Env, port string) {
	t.Helper()
	pid, args := findAPIServer(t, port)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A graceful stop drains in-flight requests, which the slowed proxy
	// makes slow; past 5 s the restart is a crash instead.
	stopped := func() error {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return nil // gone, or a zombie its parent has not reaped yet
		}
		return fmt.Errorf("kube-apiserver %d still runs", pid)
	}
	if testenv.Poll(5*time.Second, 50*time.Millisecond, stopped) != nil {
		t.Logf("kube-apiserver did not stop within 5 s of SIGTERM: killing it")
		_ = syscall.Kill(pid, syscall.SIGKILL)
		testenv.Eventually(t, time.Minute, stopped)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kube-apiserver again: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // a fixture: nothing in its etcd is kept
		<-done
	})
	testenv.Eventually(t, 2*time.Minute, func() error {
		_, err := cp.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err
	})
}

// findAPIServer finds the kube-apiserver process serving port, and its
// command line.
func findAPIServer(t *testing.T, port string) (int, []string) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, "--secure-port="+port) {
			return pid, args
		}
	}
	t.Fatalf("no kube-apiserver process serves port %s", port)
	return 0, nil
}

// waitSyncedOn is waitPhase(Synced) on another control plane.
func waitSyncedOn(t *testing.T, cp *testenv.Env, ns, name, commit string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() error {
		u, err := cp.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var repo v1alpha1.GitRepository
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &repo); err != nil {
			return err
		}
		if st := repo.Status; st.Phase != v1alpha1.PhaseSynced || st.LastSyncedCommit != commit {
			return fmt.Errorf("phase %q at %q, message %q; want Synced at %s", st.Phase, st.LastSyncedCommit, st.Message, commit)
		}
		return nil
	})
}

// valueOn is configMapValue on another control plane.
func valueOn(cp *testenv.Env, ns, name string) string {
	cm, err := cp.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return cm.Data["value"]
}
