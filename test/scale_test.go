package test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/benchchart"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// scaleConfig says how far BenchmarkScale goes; every field has an
// environment variable so that `make bench` and a user's long run share the
// code.
type scaleConfig struct {
	points    []int         // repository counts measured, ascending
	quiet     time.Duration // idle window over which CPU and API requests are counted
	idle      time.Duration // window with the controller paused: the control plane's own cost; 0 skips
	interval  string        // spec.interval of every idle repository; "" for intervalAt's
	reconcile string        // spec.reconcileInterval of the idle repositories
	steady    time.Duration // wait before measuring, so that every repository had its first drift check
	pushes    int           // webhook pushes timed at each point
	workers   int           // concurrency of creates, of the controller's syncs and of the baseline
	out       string        // where results.json (and charts) are written; "" skips
	profile   string        // where CPU profiles (first sync, baseline, quiet and paused windows) are written; "" skips
}

// scaleConfigFromEnv reads BENCH_SCALE (largest N, default 1000) and the
// ALUMIINI_BENCH_* knobs. 100, 1,000 and 10,000 are measured up to the
// largest N, unless ALUMIINI_BENCH_POINTS lists the counts ("3000", or
// "100,1000,3000").
func scaleConfigFromEnv() scaleConfig {
	c := scaleConfig{quiet: 5 * time.Minute, idle: 2 * time.Minute, reconcile: "2m", pushes: 30, workers: 32}
	largest := 1000
	if n, err := strconv.Atoi(os.Getenv("BENCH_SCALE")); err == nil && n >= 100 {
		largest = n
	}
	for _, n := range []int{100, 1000, 10000} {
		if n < largest {
			c.points = append(c.points, n)
		}
	}
	c.points = append(c.points, largest)
	if v := os.Getenv("ALUMIINI_BENCH_POINTS"); v != "" {
		c.points = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
				c.points = append(c.points, n)
			}
		}
		sort.Ints(c.points)
	}
	if d, err := time.ParseDuration(os.Getenv("ALUMIINI_BENCH_QUIET")); err == nil {
		c.quiet = d
	}
	if d, err := time.ParseDuration(os.Getenv("ALUMIINI_BENCH_IDLE")); err == nil {
		c.idle = d
	}
	c.interval = os.Getenv("ALUMIINI_BENCH_INTERVAL")
	if v := os.Getenv("ALUMIINI_BENCH_RECONCILE"); v != "" {
		c.reconcile = v
	}
	c.steady, _ = time.ParseDuration(c.reconcile)
	if d, err := time.ParseDuration(os.Getenv("ALUMIINI_BENCH_STEADY")); err == nil {
		c.steady = d
	}
	c.out = os.Getenv("ALUMIINI_BENCH_OUT")
	c.profile = os.Getenv("ALUMIINI_BENCH_PROFILE")
	return c
}

// intervalAt is spec.interval of the idle repositories while n are
// measured: the benchmark issue's 1m up to 1,000 and 5m at 10,000, unless
// ALUMIINI_BENCH_INTERVAL sets one for all.
func (c scaleConfig) intervalAt(n int) string {
	switch {
	case c.interval != "":
		return c.interval
	case n >= 10000:
		return "5m"
	}
	return "1m"
}

// BenchmarkScale is the harness of the benchmark issue: the controller
// binary, run as a user runs it, with 100, 1,000 (and with BENCH_SCALE,
// 10,000) idle GitRepositories of 20 ConfigMaps each. At each point it
// measures the first sync of the added repositories against the same
// server-side applies issued directly, then waits one reconcileInterval so
// that every repository has had its first drift check (steady state), and
// then measures settled memory, a quiet window's CPU and API requests, and
// push → applied latency of one more repository. The figures are reported
// as benchmark metrics and, with ALUMIINI_BENCH_OUT, written as JSON and
// drawn as charts.
func BenchmarkScale(b *testing.B) {
	cfg := scaleConfigFromEnv()
	for i := 0; i < b.N; i++ {
		points := runScale(b, cfg)
		for _, p := range points {
			b.ReportMetric(p.RSSKiB/1024, fmt.Sprintf("MiB-rss@%d", p.Repos))
			b.ReportMetric(p.PushP50Ms, fmt.Sprintf("push-p50-ms@%d", p.Repos))
			b.ReportMetric(p.PushP99Ms, fmt.Sprintf("push-p99-ms@%d", p.Repos))
			b.ReportMetric(p.ControllerCPUPercent, fmt.Sprintf("ctrl-cpu-%%@%d", p.Repos))
			b.ReportMetric(p.ControlPlaneCPUPercent-p.ControlPlaneIdleCPUPercent, fmt.Sprintf("plane-cpu-added-%%@%d", p.Repos))
			b.ReportMetric(p.FirstSyncRatio, fmt.Sprintf("first-sync-ratio@%d", p.Repos))
		}
		rss, heap := benchchart.Slope(points, func(p benchchart.Point) float64 { return p.RSSKiB }),
			benchchart.Slope(points, func(p benchchart.Point) float64 { return p.HeapKiB })
		b.ReportMetric(rss, "KiB-rss/repo")
		b.ReportMetric(heap, "KiB-heap/repo")
		if cfg.out != "" {
			writeScaleResults(b, cfg.out, points)
		}
	}
}

// runScale runs one pass over cfg.points and returns a Point per count.
func runScale(b *testing.B, cfg scaleConfig) []benchchart.Point {
	ns := env.Namespace(b)
	git := gitserver.New(b)
	idle := git.CreateRepo(b, "idle")
	idle.CommitStrings("first", twentyConfigMaps(""))
	hot := git.CreateRepo(b, "hot")
	hotCommit := hot.CommitStrings("first", twentyConfigMaps(ns))
	ctrl := startController(b, "--webhook-secret-file", secretFile(b), "--watch-namespace", ns,
		"--log-level", "warn", "--max-concurrent-syncs", strconv.Itoa(cfg.workers), "--profiling")
	ctrl.waitReady(b)
	if cfg.out != "" {
		// The controller logs warnings only: what went wrong in the run,
		// kept also when the run fails.
		b.Cleanup(func() {
			err := os.MkdirAll(cfg.out, 0o755)
			if err == nil {
				err = os.WriteFile(filepath.Join(cfg.out, "controller.log"), []byte(ctrl.Logs()), 0o644)
			}
			if err != nil {
				b.Logf("the controller's log is not kept: %v", err)
			}
		})
	}
	createRepo(b, ns, "hot", map[string]any{"url": hot.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(b, ns, "hot", v1alpha1.PhaseSynced, hotCommit, time.Minute)

	var points []benchchart.Point
	created := 0
	for _, n := range cfg.points {
		p := benchchart.Point{Repos: n, Interval: cfg.intervalAt(n), Reconcile: cfg.reconcile}
		steps := meansSince(b, ctrl, "alumiini_sync_step_seconds", "step", `trigger="startup"`)
		before := readWork(b, ctrl)
		stop := cpuProfiles(b, cfg.profile, fmt.Sprintf("firstsync-%d", n), ctrl)
		start := createIdleRepos(b, cfg, ns, idle.URL(), created, n)
		waitAllSynced(b, ns, n+1, ctrl) // +1: the hot repository
		p.FirstSyncSeconds = time.Since(start).Seconds()
		stop()
		p.FirstSyncWork = readWork(b, ctrl).since(before, n-created)
		p.FirstSyncStepMeanMs = steps()
		p.BaselineSeconds, p.BaselineWork = directApplies(b, cfg, ns, created, n)
		if p.BaselineSeconds > 0 {
			p.FirstSyncRatio = p.FirstSyncSeconds / p.BaselineSeconds
		}
		if created > 0 && cfg.intervalAt(created) != cfg.intervalAt(n) {
			setIntervals(b, cfg, ns, created, cfg.intervalAt(n)) // before the steady wait, which their syncs end within
		}
		created = n
		steady(cfg)
		// Read before the forced GC cycles, so that the API server's work
		// for this list of every status has ended when the window opens.
		statuses := repoStatuses(b, ns)
		p.RSSKiB, p.HeapKiB = settledMemory(b, ctrl, cfg.heapProfile(n))
		p.LiveKiB = ctrl.metricValue(b, "go_gc_heap_live_bytes") / 1024
		measureQuiet(b, cfg, ctrl, ns, statuses, &p)
		measurePushes(b, cfg, ctrl, ns, hot, &p)
		measurePlaneIdle(b, cfg, ctrl, &p)
		p.Events, p.EventMessages = eventTally(b, ns)
		b.Logf("%d repositories: %+v", n, p)
		points = append(points, p)
	}
	return points
}

// twentyConfigMaps is the content of every benchmark repository: 20
// ConfigMaps, in ns or (when ns is "") in the GitRepository's
// targetNamespace.
func twentyConfigMaps(ns string) map[string]string {
	files := map[string]string{}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("cm-%02d", i)
		if ns == "" {
			files[name+".yaml"] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  value: \"0\"\n", name)
		} else {
			files[name+".yaml"] = configMapYAML(name, ns, "0")
		}
	}
	return files
}

// parallel runs f(i) for i in [from, to) on workers goroutines and fails
// the benchmark on the first error.
func parallel(b *testing.B, workers, from, to int, f func(i int) error) {
	b.Helper()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// createNamespaces makes the target namespaces prefix-from … prefix-(to-1).
func createNamespaces(b *testing.B, workers int, prefix string, from, to int) {
	parallel(b, workers, from, to, func(i int) error {
		_, err := env.Kube.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%05d", prefix, i)}}, metav1.CreateOptions{})
		return err
	})
}

// createIdleRepos adds GitRepositories from..to-1, each applying the idle
// repository into a namespace of its own, and returns when the last create
// was answered: a first sync is timed from there.
func createIdleRepos(b *testing.B, cfg scaleConfig, ns, url string, from, to int) time.Time {
	createNamespaces(b, cfg.workers, ns, from, to)
	parallel(b, cfg.workers, from, to, func(i int) error {
		_, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(context.Background(),
			gitRepo(ns, fmt.Sprintf("r%05d", i), map[string]any{"url": url, "interval": cfg.intervalAt(to),
				"reconcileInterval": cfg.reconcile, "targetNamespace": fmt.Sprintf("%s-%05d", ns, i)}), metav1.CreateOptions{})
		return err
	})
	return time.Now()
}

// setIntervals sets spec.interval of the first n idle repositories.
func setIntervals(b *testing.B, cfg scaleConfig, ns string, n int, interval string) {
	patch := []byte(fmt.Sprintf(`{"spec":{"interval":%q}}`, interval))
	parallel(b, cfg.workers, 0, n, func(i int) error {
		_, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Patch(context.Background(),
			fmt.Sprintf("r%05d", i), types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
}

// directApplies is the first-sync baseline: the same server-side applies
// (20 ConfigMaps into each of to-from fresh namespaces) issued directly
// through client-go with the controller's concurrency. It returns their
// time, and the work of the namespaces' creates and the applies.
func directApplies(b *testing.B, cfg scaleConfig, ns string, from, to int) (float64, benchchart.Work) {
	prefix := ns + "-base"
	before := readWork(b, nil)
	stop := cpuProfiles(b, cfg.profile, fmt.Sprintf("baseline-%d", to), nil)
	createNamespaces(b, cfg.workers, prefix, from, to)
	files := twentyConfigMaps("")
	start := time.Now()
	parallel(b, cfg.workers, from*20, to*20, func(i int) error {
		target := fmt.Sprintf("%s-%05d", prefix, i/20)
		name := fmt.Sprintf("cm-%02d", i%20)
		body := strings.Replace(files[name+".yaml"], "metadata:\n", "metadata:\n  namespace: "+target+"\n", 1)
		_, err := env.Kube.CoreV1().ConfigMaps(target).Patch(context.Background(), name, types.ApplyYAMLPatchType,
			[]byte(body), metav1.PatchOptions{FieldManager: "bench", Force: ptr.To(true)})
		return err
	})
	secs := time.Since(start).Seconds()
	stop()
	work := readWork(b, nil).since(before, to-from)
	// The baseline's objects are the harness's, not the workload's: left
	// stored, they would double what the control plane keeps (and checks
	// against its watch cache) in every later window.
	parallel(b, cfg.workers, from, to, func(i int) error {
		return env.Kube.CoreV1().ConfigMaps(fmt.Sprintf("%s-%05d", prefix, i)).DeleteCollection(context.Background(),
			metav1.DeleteOptions{}, metav1.ListOptions{})
	})
	return secs, work
}

// work is a reading of what the controller (when there is one) and the
// control plane have spent so far: CPU seconds and the API server's
// requests.
type work struct {
	ctrl, plane float64
	requests    map[apiCall]float64
}

func readWork(b *testing.B, ctrl *proc) work {
	w := work{plane: planeCPU(b, controlPlanePIDs(b)), requests: apiRequests(b)}
	if ctrl != nil {
		w.ctrl = cpuSeconds(b, ctrl.cmd.Process.Pid)
	}
	return w
}

// since is the work done from before to w, the requests per repository
// of the repos the interval added.
func (w work) since(before work, repos int) benchchart.Work {
	out := benchchart.Work{ControllerCPUSeconds: w.ctrl - before.ctrl, PlaneCPUSeconds: w.plane - before.plane,
		RequestsPerRepo: map[string]float64{}}
	for call, n := range w.requests {
		if d := n - before.requests[call]; d > 0 && repos > 0 {
			out.RequestsPerRepo[call.String()] += d / float64(repos)
		}
	}
	return out
}

// heapProfile is where the settled heap profile at n repositories is
// written: beside the CPU profiles, or else beside the results.
func (c scaleConfig) heapProfile(n int) string {
	dir := c.profile
	if dir == "" {
		dir = c.out
	}
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, fmt.Sprintf("heap-%d.pb.gz", n))
}

// steady waits cfg.steady, by default one reconcileInterval, so that every
// repository has had its first drift check (they are spread over the
// interval): the benchmark measures steady state, not the quiet minutes
// before the checks start. This is a measurement window, not
// synchronisation.
func steady(cfg scaleConfig) { testenv.Hold(cfg.steady) }

// settledMemory forces two GC cycles through the controller's pprof
// endpoint (heap?gc=1) and returns its RSS and Go heap in use, in KiB.
// With a path, it also writes the second cycle's heap profile there, so
// that the memory figures come with what explains them.
func settledMemory(b *testing.B, ctrl *proc, path string) (rss, heap float64) {
	var profile string
	for i := 0; i < 2; i++ {
		code, body, err := httpGet("http://" + ctrl.metrics + "/debug/pprof/heap?gc=1")
		if err != nil || code != http.StatusOK {
			b.Fatalf("force a GC through /debug/pprof/heap?gc=1: %d %v", code, err)
		}
		profile = body
	}
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			b.Fatalf("write the heap profile: %v", err)
		}
		if err := os.WriteFile(path, []byte(profile), 0o644); err != nil {
			b.Fatalf("write the heap profile: %v", err)
		}
	}
	return processRSSKiB(b, ctrl.cmd.Process.Pid), ctrl.metricValue(b, "go_memstats_heap_inuse_bytes") / 1024
}

// measureQuiet counts CPU seconds of the controller, kube-apiserver and
// etcd, and the API server's requests by verb, over cfg.quiet.
func measureQuiet(b *testing.B, cfg scaleConfig, ctrl *proc, ns string, statuses map[string]v1alpha1.GitRepositoryStatus, p *benchchart.Point) {
	pids := controlPlanePIDs(b)
	etcdBefore, before := cpuSeconds(b, pids["etcd"]), readWork(b, ctrl)
	syncs := func(trigger string) float64 {
		return ctrl.metricValue(b, "alumiini_syncs_total", fmt.Sprintf("trigger=%q", trigger))
	}
	checksBefore, pollsBefore := syncs("reconcile"), syncs("poll")
	stop := cpuProfiles(b, cfg.profile, fmt.Sprintf("quiet-%d", p.Repos), ctrl)
	testenv.Hold(cfg.quiet) // the measurement window itself
	stop()
	secs := cfg.quiet.Seconds()
	after := readWork(b, ctrl)
	p.ControllerCPUPercent = 100 * (after.ctrl - before.ctrl) / secs
	p.ControlPlaneCPUPercent = 100 * (after.plane - before.plane) / secs
	p.EtcdCPUPercent = 100 * (cpuSeconds(b, pids["etcd"]) - etcdBefore) / secs
	p.DriftChecksPerMinute = (syncs("reconcile") - checksBefore) / cfg.quiet.Minutes()
	p.PollsPerMinute = (syncs("poll") - pollsBefore) / cfg.quiet.Minutes()
	p.RequestsPerMinute, p.WritesPerMinute = map[string]float64{}, map[string]float64{}
	for call, n := range after.requests {
		d := (n - before.requests[call]) / cfg.quiet.Minutes()
		if d <= 0 {
			continue
		}
		p.RequestsPerMinute[call.verb] += d
		if call.write() {
			p.WritesPerMinute[call.String()] += d
		}
	}
	p.StatusChanges = statusChanges(statuses, repoStatuses(b, ns))
}

// planeCPU is the CPU seconds kube-apiserver and etcd have used.
func planeCPU(b *testing.B, pids map[string]int) float64 {
	sum := 0.0
	for _, pid := range pids {
		sum += cpuSeconds(b, pid)
	}
	return sum
}

// measurePlaneIdle measures kube-apiserver + etcd with the controller
// paused (SIGSTOP), so that it sends nothing: the control plane's own cost
// with these objects stored. It runs last at a point, as the timers that
// came due during the pause fire together afterwards.
func measurePlaneIdle(b *testing.B, cfg scaleConfig, ctrl *proc, p *benchchart.Point) {
	if cfg.idle <= 0 {
		return
	}
	pids := controlPlanePIDs(b)
	if err := ctrl.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ctrl.cmd.Process.Signal(syscall.SIGCONT) }()
	before := planeCPU(b, pids)
	stop := cpuProfiles(b, cfg.profile, fmt.Sprintf("paused-%d", p.Repos), nil)
	testenv.Hold(cfg.idle) // the measurement window itself
	stop()
	p.ControlPlaneIdleCPUPercent = 100 * (planeCPU(b, pids) - before) / cfg.idle.Seconds()
}

// measurePushes times cfg.pushes webhook pushes to the hot repository, each
// changing one ConfigMap, from the POST until a watch sees the new value;
// and the webhook's reply time. Beside each push it keeps what the git
// server and the machine were doing meanwhile, so that a slow push can be
// told apart: the git processes' own work, or a wait for a CPU.
func measurePushes(b *testing.B, cfg scaleConfig, ctrl *proc, ns string, hot *gitserver.Repo, p *benchchart.Point) {
	w, err := env.Kube.CoreV1().ConfigMaps(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=cm-00"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var applied, replies []time.Duration
	fetch, sync := meanOf(b, ctrl, "alumiini_fetch_duration_seconds", `outcome="fetched"`),
		meanOf(b, ctrl, "alumiini_sync_duration_seconds", `trigger="webhook"`)
	steps := meansSince(b, ctrl, "alumiini_sync_step_seconds", "step", `trigger="webhook"`)
	gcs, allocs := ctrl.metricValue(b, "go_gc_duration_seconds_count"), ctrl.metricValue(b, "go_memstats_alloc_bytes_total")
	for i := 0; i < cfg.pushes; i++ {
		want := fmt.Sprintf("%d-%d", p.Repos, i)
		sha := hot.CommitStrings(want, map[string]string{"cm-00.yaml": configMapYAML("cm-00", ns, want)})
		fetched := meanOf(b, ctrl, "alumiini_sync_step_seconds", `trigger="webhook"`, `step="fetch"`)
		machine := readMachineCPU(b)
		start := time.Now()
		if code, body := pushGitHub(b, ctrl.webhook, hot.URL(), sha); code != http.StatusAccepted {
			b.Fatalf("webhook: %d %s", code, body)
		}
		replies = append(replies, time.Since(start))
		waitValue(b, w.ResultChan(), want)
		applied = append(applied, time.Since(start))
		busy, wait, wall := readMachineCPU(b).since(machine)
		p.PushFetchMs = append(p.PushFetchMs, fetched())
		p.PushGitServerMs = append(p.PushGitServerMs, ms(gitserver.Longest(hot.ServedSince(start))))
		p.PushBusyCores = append(p.PushBusyCores, busy/wall)
		p.PushCPUWaitMs = append(p.PushCPUWaitMs, wait)
	}
	p.PushP50Ms, p.PushP99Ms = quantileMs(applied, 0.5), quantileMs(applied, 0.99)
	p.WebhookP50Ms, p.WebhookP99Ms = quantileMs(replies, 0.5), quantileMs(replies, 0.99)
	p.PushFetchMeanMs, p.PushSyncMeanMs = fetch(), sync()
	p.PushStepMeanMs = steps()
	p.PushGCs = ctrl.metricValue(b, "go_gc_duration_seconds_count") - gcs
	p.PushAllocKiB = (ctrl.metricValue(b, "go_memstats_alloc_bytes_total") - allocs) / 1024 / float64(cfg.pushes)
	for _, d := range applied {
		p.PushMs = append(p.PushMs, ms(d))
	}
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// machineCPU is what the whole machine's CPUs did, read from /proc: the
// time they were busy and how long at least one runnable task waited for
// a CPU (pressure stall information), both in milliseconds since boot, and
// when they were read.
type machineCPU struct {
	busyMs, waitMs float64
	at             time.Time
}

func readMachineCPU(b *testing.B) machineCPU {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	m := machineCPU{at: time.Now()}
	// The first line sums every CPU: user nice system idle iowait irq
	// softirq steal guest guest_nice. Busy is user to softirq without idle
	// and iowait; steal is time the hypervisor gave to others, and guest
	// time is in user already.
	fields := strings.Fields(strings.SplitN(string(stat), "\n", 2)[0])
	for i, f := range fields[1:8] {
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		m.busyMs += 1000 * v / clockTicks
	}
	// Pressure stall information may be missing (older kernels, some
	// sandboxes): the wait is then reported as zero.
	if psi, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		for _, f := range strings.Fields(strings.SplitN(string(psi), "\n", 2)[0]) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				us, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatalf("/proc/pressure/cpu: %v", err)
				}
				m.waitMs = us / 1000
			}
		}
	}
	return m
}

// since is what the machine did from before to m: busy and waiting
// milliseconds, and the milliseconds between the readings.
func (m machineCPU) since(before machineCPU) (busyMs, waitMs, wallMs float64) {
	return m.busyMs - before.busyMs, m.waitMs - before.waitMs, ms(m.at.Sub(before.at))
}

// meanOf returns a function that reports the mean, in milliseconds, of the
// controller's histogram or summary name (samples matching labels) over
// the observations made since meanOf was called: where a push's time goes.
func meanOf(b *testing.B, ctrl *proc, name string, labels ...string) func() float64 {
	means := meansSince(b, ctrl, name, "", labels...)
	return func() float64 { return means()[""] }
}

// meansSince is meanOf per value of the label by. Sums and counts come
// from one scrape, as a sync may still be ending.
func meansSince(b *testing.B, ctrl *proc, name, by string, labels ...string) func() map[string]float64 {
	scrape := func() (sums, counts map[string]float64) {
		body := ctrl.scrape(b)
		return sumByLabel(body, name+"_sum", by, labels...), sumByLabel(body, name+"_count", by, labels...)
	}
	sums0, counts0 := scrape()
	return func() map[string]float64 {
		sums, counts := scrape()
		means := map[string]float64{}
		for key, n := range counts {
			if n -= counts0[key]; n > 0 {
				means[key] = 1000 * (sums[key] - sums0[key]) / n
			}
		}
		return means
	}
}

// quantileMs is the q-quantile of ds (nearest rank), in milliseconds.
func quantileMs(ds []time.Duration, q float64) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)) + 0.5)
	if i >= len(s) {
		i = len(s) - 1
	}
	return ms(s[i])
}

// controlPlanePIDs finds the kube-apiserver and etcd that this test process
// started (its direct children), not those of other test processes.
func controlPlanePIDs(b *testing.B) map[string]int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	pids := map[string]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		name, fields := procStat(string(stat))
		if (name == "kube-apiserver" || name == "etcd") && len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			pids[name] = pid
		}
	}
	if len(pids) != 2 {
		b.Fatalf("found %d control plane processes started by this test, want kube-apiserver and etcd", len(pids))
	}
	return pids
}

// procStat splits /proc/<pid>/stat into the command name and the fields
// after it (state, ppid, …).
func procStat(stat string) (string, []string) {
	open, end := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return "", nil
	}
	return stat[open+1 : end], strings.Fields(stat[end+1:])
}

// cpuSeconds is a process's user plus system CPU time.
func cpuSeconds(b *testing.B, pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	_, f := procStat(string(stat))
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks
}

const clockTicks = 100 // USER_HZ on Linux: the unit of /proc's CPU times

// apiCall is one series of the API server's apiserver_request_total.
type apiCall struct{ verb, resource, subresource, dryRun string }

// write reports whether the call changes what the API server stores.
func (c apiCall) write() bool {
	switch c.verb {
	case "CREATE", "POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION":
		return c.dryRun == ""
	}
	return false
}

// String is "VERB resource/subresource".
func (c apiCall) String() string {
	if c.subresource == "" {
		return c.verb + " " + c.resource
	}
	return c.verb + " " + c.resource + "/" + c.subresource
}

// apiRequests reads the API server's own count of the requests it served.
func apiRequests(tb testing.TB) map[apiCall]float64 {
	return apiCalls(apiMetrics(tb), "apiserver_request_total")
}

// apiMetrics scrapes the API server's own /metrics.
func apiMetrics(tb testing.TB) string {
	tb.Helper()
	raw, err := env.Kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		tb.Fatalf("scrape the API server's /metrics: %v", err)
	}
	return string(raw)
}

// apiCalls sums the samples of one metric of a scrape by apiCall, over
// the series whose labels contain every one of having (`code="429"`).
func apiCalls(raw, metric string, having ...string) map[apiCall]float64 {
	return sumBy(raw, metric, func(line string) (apiCall, bool) {
		c := apiCall{labelValue(line, "verb"), labelValue(line, "resource"), labelValue(line, "subresource"), labelValue(line, "dry_run")}
		return c, c.verb != ""
	}, having...)
}

// sumBy sums the samples of one metric of a Prometheus text scrape by the
// key that key finds in each series (false: skip it), over the series
// whose labels contain every one of having.
func sumBy[K comparable](raw, metric string, key func(line string) (K, bool), having ...string) map[K]float64 {
	out := map[K]float64{}
lines:
	for _, line := range strings.Split(raw, "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		for _, h := range having {
			if !strings.Contains(line, h) {
				continue lines
			}
		}
		k, ok := key(line)
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil && ok {
			out[k] += v
		}
	}
	return out
}

// labelValue returns the value of label name in a Prometheus text line.
func labelValue(line, name string) string {
	i := strings.Index(line, name+`="`)
	if i < 0 {
		return ""
	}
	rest := line[i+len(name)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

// writeScaleResults writes results.json and the charts into dir.
func writeScaleResults(b *testing.B, dir string, points []benchchart.Point) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data, err := json.MarshalIndent(points, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := benchchart.Draw(dir, points, benchchart.Flux()); err != nil {
		b.Fatal(err)
	}
}

// sumBy groups by the key, skips the series the key refuses or having
// excludes, and ignores other metrics, including those whose name starts
// with the one asked for.
func TestSumBy(t *testing.T) {
	raw := `apiserver_request_total{code="200",resource="leases",verb="PUT"} 3
apiserver_request_total{code="429",resource="leases",verb="PUT"} 2
apiserver_request_total{code="200",resource="pods",verb="GET"} 5
apiserver_request_total{code="200",resource="pods"} 7
apiserver_request_total_other{code="200",resource="pods",verb="GET"} 11
`
	all := apiCalls(raw, "apiserver_request_total")
	if want := map[apiCall]float64{{verb: "PUT", resource: "leases"}: 5, {verb: "GET", resource: "pods"}: 5}; !maps.Equal(all, want) {
		t.Errorf("all = %v, want %v", all, want)
	}
	refused := apiCalls(raw, "apiserver_request_total", `code="429"`)
	if want := map[apiCall]float64{{verb: "PUT", resource: "leases"}: 2}; !maps.Equal(refused, want) {
		t.Errorf("429s = %v, want %v", refused, want)
	}
}
