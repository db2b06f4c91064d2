package test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// hostileRig is one controller with a healthy repository syncing beside
// the hostile ones: after each hostile repository, a push to the healthy
// one must still be applied by the same, still running, controller.
type hostileRig struct {
	ns      string
	git     *gitserver.Server
	ctrl    *proc
	pid     int
	healthy *gitserver.Repo
	pushes  int
}

func newHostileRig(t *testing.T) *hostileRig {
	r := &hostileRig{ns: env.Namespace(t), git: gitserver.New(t)}
	r.healthy = r.git.CreateRepo(t, "healthy")
	first := r.healthy.CommitStrings("first", map[string]string{"h.yaml": configMapYAML("healthy", r.ns, "0")})
	r.ctrl = startController(t, "--watch-namespace", r.ns, "--webhook-secret-file", secretFile(t))
	r.ctrl.waitReady(t)
	r.pid = r.ctrl.cmd.Process.Pid
	createRepo(t, r.ns, "healthy", map[string]any{"url": r.healthy.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, r.ns, "healthy", v1alpha1.PhaseSynced, first, 60*time.Second)
	return r
}

// stillHealthy pushes to the healthy repository and waits for it to be
// applied, then checks the controller process is the one started.
func (r *hostileRig) stillHealthy(t *testing.T) {
	t.Helper()
	r.pushes++
	value := strconv.Itoa(r.pushes)
	commit := r.healthy.CommitStrings("beside "+value, map[string]string{"h.yaml": configMapYAML("healthy", r.ns, value)})
	if code, body := pushGitHub(t, r.ctrl.webhook, r.healthy.URL(), commit); code != http.StatusAccepted {
		t.Fatalf("webhook for the healthy repository: %d %s", code, body)
	}
	waitPhase(t, r.ns, "healthy", v1alpha1.PhaseSynced, commit, 60*time.Second)
	if err := syscall.Kill(r.pid, 0); err != nil || r.ctrl.cmd.Process.Pid != r.pid {
		t.Fatalf("controller PID %d is gone (%v): it crashed", r.pid, err)
	}
}

// hostile creates a GitRepository for repo and waits for phase.
func (r *hostileRig) hostile(t *testing.T, repo *gitserver.Repo, name, commit string, phase v1alpha1.Phase, spec map[string]any, timeout time.Duration) *v1alpha1.GitRepository {
	t.Helper()
	s := map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"}
	for k, v := range spec {
		s[k] = v
	}
	createRepo(t, r.ns, name, s)
	return waitPhase(t, r.ns, name, phase, commit, timeout)
}

// procStatusKiB reads a field such as VmRSS or VmHWM of /proc/<pid>/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("%s %q does not say %q", what, got, want)
		}
	}
}

// TestHostileRepositories: repositories built to hurt the controller are
// refused (or, for many small files, synced) without crashing it or
// stopping a healthy repository beside them.
func TestHostileRepositories(t *testing.T) {
	r := newHostileRig(t)
	ns := r.ns

	t.Run("50 MB manifest", func(t *testing.T) {
		repo := r.git.CreateRepo(t, "big")
		body := configMapYAML("big", ns, "") + "  blob: " + strings.Repeat("x", 50<<20) + "\n"
		commit := repo.Commit("big", map[string][]byte{"big.yaml": []byte(body)})
		before := procStatusKiB(t, r.pid, "VmRSS")
		got := r.hostile(t, repo, "big", commit, v1alpha1.PhaseFailed, nil, 120*time.Second)
		mustContain(t, "status message", got.Status.Message, "big.yaml", "split it")
		growth := procStatusKiB(t, r.pid, "VmHWM") - before
		t.Logf("peak RSS growth for a 50 MB manifest: %d MiB", growth>>10)
		if growth > 300<<10 {
			t.Errorf("peak RSS grew by %d MiB for a 50 MB manifest, want < 300", growth>>10)
		}
		r.stillHealthy(t)
	})

	t.Run("YAML alias bomb", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\na0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
		for i := 1; i < 10; i++ {
			fmt.Fprintf(&b, "a%d: &a%d [*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
		}
		repo := r.git.CreateRepo(t, "bomb")
		commit := repo.CommitStrings("bomb", map[string]string{"bomb.yaml": b.String()})
		before := procStatusKiB(t, r.pid, "VmRSS")
		start := time.Now()
		got := r.hostile(t, repo, "bomb", commit, v1alpha1.PhaseFailed, nil, 30*time.Second)
		mustContain(t, "status message", got.Status.Message, "bomb.yaml")
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the alias bomb took %v to refuse", took)
		}
		if growth := procStatusKiB(t, r.pid, "VmHWM") - before; growth > 300<<10 {
			t.Errorf("peak RSS grew by %d MiB for an alias bomb", growth>>10)
		}
		r.stillHealthy(t)
	})

	t.Run("symlinks out of the checkout", func(t *testing.T) {
		outside := t.TempDir()
		if err := os.WriteFile(filepath.Join(outside, "outside.yaml"), []byte(configMapYAML("outside", ns, "stolen")), 0o644); err != nil {
			t.Fatal(err)
		}
		repo := r.git.CreateRepo(t, "links")
		repo.Symlink(filepath.Join(outside, "outside.yaml"), "leak.yaml")
		repo.Symlink(outside, "leakdir")
		commit := repo.CommitStrings("links", map[string]string{"in.yaml": configMapYAML("inside", ns, "ok")})
		r.hostile(t, repo, "links", commit, v1alpha1.PhaseSynced, nil, 60*time.Second)
		got := r.hostile(t, repo, "links-dir", "", v1alpha1.PhaseFailed, map[string]any{"path": "leakdir"}, 60*time.Second)
		mustContain(t, "status message", got.Status.Message, `"leakdir"`, "outside the repository")
		if v, _ := configMapValue(ns, "inside"); v != "ok" {
			t.Errorf("the object inside the checkout was not applied")
		}
		if v, _ := configMapValue(ns, "outside"); v != "" {
			t.Errorf("a manifest outside the checkout was applied through a symlink")
		}
		r.stillHealthy(t)
	})

	t.Run("kustomization with a remote base", func(t *testing.T) {
		var requests atomic.Int64
		remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			requests.Add(1)
			_, _ = w.Write([]byte(configMapYAML("remote", ns, "fetched")))
		}))
		defer remote.Close()
		repo := r.git.CreateRepo(t, "remote")
		commit := repo.CommitStrings("remote", map[string]string{
			"kustomization.yaml": "resources:\n- " + remote.URL + "/base.yaml\n- " + strings.Replace(remote.URL, "http://", "https://", 1) + "//base?ref=main\n",
		})
		got := r.hostile(t, repo, "remote", commit, v1alpha1.PhaseFailed, nil, 60*time.Second)
		mustContain(t, "status message", got.Status.Message, "remote reference", "vendor it")
		if n := requests.Load(); n != 0 {
			t.Errorf("the controller made %d requests for a remote base", n)
		}
		r.stillHealthy(t)
	})

	t.Run("5000 small files", func(t *testing.T) {
		files := make(map[string]string, 5000)
		for i := range 5000 {
			files[fmt.Sprintf("d%02d/f%04d.yaml", i%50, i)] = configMapYAML(fmt.Sprintf("small-%04d", i), ns, strconv.Itoa(i))
		}
		repo := r.git.CreateRepo(t, "many")
		commit := repo.CommitStrings("many", files)
		got := r.hostile(t, repo, "many", commit, v1alpha1.PhaseSynced, nil, 5*time.Minute)
		if n := len(got.Status.Inventory); n != 5000 {
			t.Errorf("inventory holds %d objects, want 5000", n)
		}
		if v, _ := configMapValue(ns, "small-4999"); v != "4999" {
			t.Errorf("small-4999 = %q", v)
		}
		r.stillHealthy(t)
	})

	t.Run("path with ..", func(t *testing.T) {
		for _, path := range []string{"../other", "apps/../../etc", ".."} {
			_, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(context.Background(),
				gitRepo(ns, "dotdot", map[string]any{"url": r.healthy.URL(), "path": path}), metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), "must not contain '..'") {
				t.Errorf("spec.path %q: the API server answered %v, want a refusal", path, err)
			}
			var status interface{ Status() metav1.Status }
			if errors.As(err, &status) && status.Status().Code != http.StatusUnprocessableEntity {
				t.Errorf("spec.path %q: code %d, want 422", path, status.Status().Code)
			}
		}
		r.stillHealthy(t)
	})
	testenv.Eventually(t, time.Second, func() error { return syscall.Kill(r.pid, 0) })
}
