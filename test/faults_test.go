package test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// tenConfigMaps is a commit of ConfigMaps prefix-0..prefix-9 with value v
// that deletes the files of the names in gone.
func tenConfigMaps(ns, prefix, v string, gone ...string) map[string]string {
	files := map[string]string{}
	for i := range 10 {
		name := fmt.Sprintf("%s-%d", prefix, i)
		files[name+".yaml"] = ""
		if !slices.Contains(gone, name) {
			files[name+".yaml"] = configMapYAML(name, ns, v)
		}
	}
	return files
}

// wantConfigMaps waits until the namespace holds exactly the ConfigMaps
// of want (name → value) among those named prefix-*.
func wantConfigMaps(t *testing.T, ns, what string, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() error {
		list, err := env.Kube.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: v1alpha1.LabelName})
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, cm := range list.Items {
			got[cm.Name] = cm.Data["value"]
		}
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s: ConfigMap %s = %q, want %q", what, name, got[name], v)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%s: %d ConfigMaps, want %d: %v", what, len(got), len(want), got)
		}
		return nil
	})
}

// TestAPIFaultsLoseNothing: with the controller's connection to the API
// server slowed (500 ms per response chunk), cut mid-response over and
// over, and refused, pushes still converge once the faults end: every
// object git has is applied, what left git is pruned and nothing else, and
// the process never exits.
func TestAPIFaultsLoseNothing(t *testing.T) {
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "apps")
	commit := repo.CommitStrings("first", tenConfigMaps(ns, "cm", "1"))
	proxy := newAPIProxy(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns, "--kubeconfig", proxy.kubeconfig(t))
	ctrl.waitReady(t)
	pid := ctrl.cmd.Process.Pid
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h", "timeout": "30s"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, 60*time.Second)

	gone := []string{}
	step := func(name, value string, fault func(), heal func()) {
		t.Helper()
		fault()
		gone = append(gone, fmt.Sprintf("cm-%d", len(gone)))
		files := tenConfigMaps(ns, "cm", value, gone...)
		commit = repo.CommitStrings(name, files)
		if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), commit); code != http.StatusAccepted {
			t.Fatalf("%s: webhook reply %d %s", name, code, body)
		}
		heal()
		want := map[string]string{}
		for f, content := range files {
			if content != "" {
				want[strings.TrimSuffix(f, ".yaml")] = value
			}
		}
		wantConfigMaps(t, ns, name, want)
		waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, 2*time.Minute)
		if ctrl.cmd.ProcessState != nil || ctrl.cmd.Process.Pid != pid {
			t.Fatalf("%s: the controller exited", name)
		}
	}
	failures := func() float64 { return ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`) }
	waitFailures := func(before float64) {
		testenv.Eventually(t, time.Minute, func() error {
			if failures() <= before {
				return fmt.Errorf("no failed sync yet")
			}
			return nil
		})
	}

	step("slow", "2", func() { proxy.slow(500 * time.Millisecond) }, func() {})
	proxy.slow(0)

	var before float64
	step("cut mid-response", "3", func() { before = failures(); proxy.dropping(8 << 10) }, func() {
		waitFailures(before)
		proxy.dropping(0)
	})
	step("refused", "4", func() { before = failures(); proxy.cut() }, func() {
		waitFailures(before)
		proxy.restore(t)
	})
}
