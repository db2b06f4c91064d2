package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
)

// BenchmarkWebhookToApplied measures design.md §6's "webhook → objects
// applied" for a 20-object repository on loopback: each iteration pushes a
// commit that changes one object, sends the signed webhook, and stops the
// clock when a watch sees the changed object. It reports the median and p99.
func BenchmarkWebhookToApplied(b *testing.B) {
	ns := env.Namespace(b)
	git := gitserver.New(b)
	repo := git.CreateRepo(b, "bench")
	files := map[string]string{}
	for i := 0; i < 20; i++ {
		files[fmt.Sprintf("cm-%02d.yaml", i)] = configMapYAML(fmt.Sprintf("cm-%02d", i), ns, "0")
	}
	first := repo.CommitStrings("first", files)
	ctrl := startController(b, "--webhook-secret-file", secretFile(b), "--watch-namespace", ns, "--log-level", "warn")
	_, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(context.Background(),
		gitRepo(ns, "bench", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"}), metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	waitPhase(b, ns, "bench", v1alpha1.PhaseSynced, first, time.Minute)

	w, err := env.Kube.CoreV1().ConfigMaps(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=cm-00"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var took []time.Duration
	steps := meansSince(b, ctrl, "alumiini_sync_step_seconds", "step", `trigger="webhook"`)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		b.StopTimer()
		want := fmt.Sprint(i)
		sha := repo.CommitStrings(want, map[string]string{"cm-00.yaml": configMapYAML("cm-00", ns, want)})
		b.StartTimer()
		start := time.Now()
		if code, body := pushGitHub(b, ctrl.webhook, repo.URL(), sha); code != http.StatusAccepted {
			b.Fatalf("webhook: %d %s", code, body)
		}
		waitValue(b, w.ResultChan(), want)
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	b.Logf("where a push's time went, mean ms per pipeline step: %s", formatSteps(steps()))
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
}

// formatSteps lists step means, largest first, rounded to 0.1 ms.
func formatSteps(means map[string]float64) string {
	names := make([]string, 0, len(means))
	for name := range means {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return means[names[i]] > means[names[j]] })
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %.1f", name, means[name])
	}
	return strings.Join(parts, ", ")
}

func waitValue(b *testing.B, events <-chan watch.Event, want string) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-events:
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Data["value"] == want {
				return
			}
		case <-timeout:
			b.Fatalf("object not applied within 30s (want value %s)", want)
		}
	}
}

// waitAllSynced waits until n GitRepositories of ns are Synced. It lists
// them once and then follows a watch: polling with a LIST of every
// GitRepository, each with its inventory, loaded the API server it
// measures (at 10,000, one LIST a second was a fifth of its CPU during the
// first sync, which the direct-apply baseline did not pay). It fails at
// once when one of ctrls exits.
func waitAllSynced(b *testing.B, ns string, n int, ctrls ...*proc) {
	b.Helper()
	timeout := max(10*time.Minute, time.Duration(n)*200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var dead atomic.Pointer[proc]
	for _, p := range ctrls { // a controller that exited will sync nothing more
		go func() {
			select {
			case <-p.exited:
				dead.Store(p)
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	res := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	var tally syncedTally
	for ctx.Err() == nil {
		list, err := res.List(ctx, metav1.ListOptions{})
		if err != nil {
			retryPause(ctx)
			continue
		}
		tally = syncedTally{synced: map[string]bool{}} // afresh: deletions in a gap
		for i := range list.Items {
			tally.note(&list.Items[i], false)
		}
		if tally.count >= n {
			return
		}
		w, err := res.Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			retryPause(ctx)
			continue
		}
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				retryPause(ctx) // an error event: list again, not at once
				break
			}
			tally.note(u, ev.Type == watch.Deleted)
			if tally.count >= n {
				w.Stop()
				return
			}
		}
		w.Stop()
	}
	if p := dead.Load(); p != nil {
		b.Fatalf("%d of %d GitRepositories synced when a controller exited; its last log lines:\n%s", tally.count, n, lastLines(p.Logs(), 40))
	}
	b.Fatalf("%d of %d GitRepositories synced within %s", tally.count, n, timeout)
}

// retryPause paces the retries of a failed request, until ctx ends.
func retryPause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// syncedTally counts the Synced GitRepositories a list and a watch showed.
type syncedTally struct {
	synced map[string]bool
	count  int
}

func (t *syncedTally) note(u *unstructured.Unstructured, deleted bool) {
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	now := !deleted && phase == string(v1alpha1.PhaseSynced)
	switch was := t.synced[u.GetName()]; {
	case now && !was:
		t.count++
	case was && !now:
		t.count--
	}
	t.synced[u.GetName()] = now
}

// processRSSKiB reads a process's resident set size from /proc.
func processRSSKiB(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmRSS:" {
			v, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
	}
	b.Fatal("no VmRSS in /proc status")
	return 0
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
