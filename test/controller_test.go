package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// The helpers below run the real alumiini binary as a subprocess against
// the package's control plane.

// binary is a command of this repository, built once per test run.
type binary struct {
	cmd  string // under cmd/
	once sync.Once
	path string
	err  error
}

// Binaries the end-to-end tests run.
var (
	controllerBin = &binary{cmd: "alumiini"}
	pluginBin     = &binary{cmd: "kubectl-alumiini"}
)

func (b *binary) build(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", b.cmd+"-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, b.cmd)
		cmd := exec.Command("go", "build", "-o", b.path, "./cmd/"+b.cmd)
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", b.cmd, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// remove deletes the build, so that test runs do not leave 165 MiB binaries
// behind in the temporary directory.
func (b *binary) remove() {
	if b.path != "" {
		os.RemoveAll(filepath.Dir(b.path))
	}
}

// controllerBinary builds cmd/alumiini once per test run, or returns
// $ALUMIINI_TEST_BINARY (a binary built with -race, say).
func controllerBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("ALUMIINI_TEST_BINARY"); bin != "" {
		return bin
	}
	return controllerBin.build(t)
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is one running controller.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	webhook string
	metrics string
	health  string
	done    chan error
	exited  chan struct{} // closed when the process has ended
	mu      sync.Mutex
	logs    bytes.Buffer
}

// startController runs the binary with its servers on free loopback ports,
// as the ServiceAccount of deploy/ with deploy/'s roles (rbac_test.go);
// extra flags come last and win. The process is stopped with SIGTERM when
// the test ends, if it is still running.
func startController(t testing.TB, extra ...string) *proc {
	t.Helper()
	return startControllerEnv(t, nil, extra...)
}

// startControllerEnv is startController with extra environment variables.
// A controller that exits at once because a port freeAddr picked was
// taken meanwhile (by a test of another package running in parallel) is
// started again on new ports.
func startControllerEnv(t testing.TB, environ []string, extra ...string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := launchController(t, environ, extra...)
		if attempt == 3 || !p.lostPortRace() {
			return p
		}
		t.Logf("controller lost a race for its ports; starting it again on new ones")
	}
}

// lostPortRace waits until the controller's health server listens, and
// reports a controller that exited first because an address was in use.
func (p *proc) lostPortRace() bool {
	lost := false
	_ = testenv.Poll(10*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			p.done <- err // for stop and the cleanup
			lost = strings.Contains(p.Logs(), "address already in use")
			return nil
		default:
		}
		c, err := net.DialTimeout("tcp", p.health, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err
	})
	return lost
}

// launchController starts one controller process (startControllerEnv).
func launchController(t testing.TB, environ []string, extra ...string) *proc {
	t.Helper()
	p := &proc{t: t, webhook: freeAddr(t), metrics: freeAddr(t), health: freeAddr(t), done: make(chan error, 1), exited: make(chan struct{})}
	args := append([]string{
		"--kubeconfig", shippedIdentity(t, extra),
		"--webhook-addr", p.webhook, "--metrics-addr", p.metrics, "--health-addr", p.health,
		"--cache-dir", t.TempDir(), "--log-level", "debug", "--shutdown-timeout", "20s",
	}, extra...)
	p.cmd = exec.Command(controllerBinary(t), args...)
	p.cmd.Env = append(append(os.Environ(), "KUBERNETES_SERVICE_HOST="), environ...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		close(p.exited)
		p.done <- err
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
			}
		}
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in the controller")
		}
		if t.Failed() {
			t.Logf("controller logs:\n%s", p.Logs())
		}
	})
	return p
}

// hasExited reports whether the process has ended. (cmd.ProcessState is
// written by the goroutine that waits for it: reading it elsewhere races.)
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Logs returns what the controller printed so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// waitReady polls /readyz.
func (p *proc) waitReady(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() error {
		code, _, err := httpGet("http://" + p.health + "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})
}

// stop sends SIGTERM and returns the exit error and how long it took.
func (p *proc) stop(t testing.TB) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err, time.Since(start)
	case <-time.After(45 * time.Second):
		t.Fatalf("controller did not exit within 45s of SIGTERM")
		return nil, 0
	}
}

func httpGet(url string) (int, string, error) { return httpGetWithin(5*time.Second, url) }

// metricValue sums the samples of a metric whose label set contains every
// given label="value" pair, from the text exposition format.
func (p *proc) metricValue(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for _, v := range p.metricByLabel(t, name, "", labels...) {
		sum += v
	}
	return sum
}

// metricByLabel is metricValue summed per value of the label by: the
// samples without it are summed under "".
func (p *proc) metricByLabel(t testing.TB, name, by string, labels ...string) map[string]float64 {
	t.Helper()
	return sumByLabel(p.scrape(t), name, by, labels...)
}

// scrape reads the controller's /metrics.
func (p *proc) scrape(t testing.TB) string {
	t.Helper()
	_, body, err := httpGet("http://" + p.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return body
}

// sumByLabel sums the samples of metric name in body (the text exposition
// format) whose label set contains every given label="value" pair, per
// value of the label by.
func sumByLabel(body, name, by string, labels ...string) map[string]float64 {
	sums := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		key := ""
		if by != "" {
			key = labelValue(line, by)
		}
		sums[key] += v
	}
	return sums
}

// createRepo creates a GitRepository.
func createRepo(t testing.TB, ns, name string, spec map[string]any) {
	t.Helper()
	_, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).
		Create(context.Background(), gitRepo(ns, name, spec), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create GitRepository %s/%s: %v", ns, name, err)
	}
}

// getRepo reads a GitRepository.
func getRepo(t testing.TB, ns, name string) *v1alpha1.GitRepository {
	t.Helper()
	u, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var repo v1alpha1.GitRepository
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &repo); err != nil {
		t.Fatal(err)
	}
	return &repo
}

// waitPhase waits until the GitRepository reports phase for a sync of
// commit (its last attempted commit; for Synced also its last synced one).
func waitPhase(t testing.TB, ns, name string, phase v1alpha1.Phase, commit string, timeout time.Duration) *v1alpha1.GitRepository {
	t.Helper()
	var repo *v1alpha1.GitRepository
	testenv.Eventually(t, timeout, func() error {
		repo = getRepo(t, ns, name)
		st := repo.Status
		if st.Phase != phase || (commit != "" && st.LastAttemptedCommit != commit) ||
			(phase == v1alpha1.PhaseSynced && commit != "" && st.LastSyncedCommit != commit) {
			return fmt.Errorf("phase %q attempted %q message %q; want %s at %s", st.Phase, st.LastAttemptedCommit, st.Message, phase, commit)
		}
		return nil
	})
	return repo
}

func configMapYAML(name, ns, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  value: %q\n", name, ns, value)
}

// configMapValue returns data.value of a ConfigMap, or "" when absent.
func configMapValue(ns, name string) (string, string) {
	cm, err := env.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", ""
	}
	return cm.Data["value"], cm.ResourceVersion
}

// appsRepo makes a test's namespace and a git repository "apps" whose first
// commit holds ConfigMap a=1 in that namespace.
func appsRepo(t testing.TB, opts ...gitserver.Option) (ns string, repo *gitserver.Repo, first string) {
	t.Helper()
	ns = env.Namespace(t)
	repo = gitserver.New(t, opts...).CreateRepo(t, "apps")
	first = repo.CommitStrings("first", map[string]string{"a.yaml": configMapYAML("a", ns, "1")})
	return ns, repo, first
}
