package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// plugin runs the plugin against the control plane and returns its
// stdout, stderr and exit code.
type plugin struct {
	t          *testing.T
	kubeconfig string
	ns         string
	extra      []string
}

func (p plugin) run(args ...string) (string, string, int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"--kubeconfig", p.kubeconfig, "-n", p.ns}, p.extra...)
	cmd := exec.CommandContext(ctx, pluginBin.build(p.t), append(all, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		p.t.Fatalf("run kubectl-alumiini %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// want runs args and fails the test unless the exit code is code.
func (p plugin) want(code int, args ...string) string {
	p.t.Helper()
	out, errOut, got := p.run(args...)
	if got != code {
		p.t.Fatalf("kubectl-alumiini %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, out, errOut)
	}
	return out
}

func (p plugin) json(v any, args ...string) {
	p.t.Helper()
	out := p.want(0, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		p.t.Fatalf("kubectl-alumiini %v -o json: %v\n%s", args, err, out)
	}
}

// TestCLI drives every command of the plugin against the control plane
// and a running controller.
func TestCLI(t *testing.T) {
	ns, repo, first := appsRepo(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns)
	ctrl.waitReady(t)
	p := plugin{t: t, kubeconfig: adminKubeconfig(t), ns: ns, extra: []string{"--controller-url", "http://" + ctrl.metrics}}

	out := p.want(0, "create", "apps", "--url", repo.URL(), "--branch", "main", "--interval", "1h")
	if !strings.Contains(out, ns+"/apps created") {
		t.Fatalf("create said %q", out)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	t.Run("get", func(t *testing.T) { cliGet(t, p, first) })
	t.Run("status", func(t *testing.T) { cliStatus(t, p) })
	t.Run("tree", func(t *testing.T) { cliTree(t, p, ns) })
	t.Run("diff", func(t *testing.T) { cliDiff(t, p, ns) })
	t.Run("sync", func(t *testing.T) { cliSync(t, p, ns, repo.CommitStrings) })
	t.Run("suspend", func(t *testing.T) { cliSuspend(t, p, ns) })
	t.Run("check", func(t *testing.T) { cliCheck(t, p, ctrl) })
}

func cliGet(t *testing.T, p plugin, commit string) {
	var obj struct {
		Status v1alpha1.GitRepositoryStatus `json:"status"`
	}
	p.json(&obj, "get", "apps")
	if obj.Status.LastSyncedCommit != commit {
		t.Fatalf("get -o json: synced %q, want %q", obj.Status.LastSyncedCommit, commit)
	}
	table := p.want(0, "get", "-A")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "NAMESPACE") {
		t.Fatalf("get -A table:\n%s", table)
	}
	row := ""
	for _, l := range lines {
		if strings.HasPrefix(l, p.ns+" ") {
			row = l
		}
	}
	for _, want := range []string{"apps", "True", "Synced", commit[:7], "@main"} {
		if !strings.Contains(row, want) {
			t.Fatalf("get -A row %q lacks %q\n%s", row, want, table)
		}
	}
	if strings.Contains(table, "\x1b[") {
		t.Fatal("colour codes in output to a pipe")
	}
	p.want(2, "get", "missing")
}

type cliStatusReport struct {
	Repository v1alpha1.GitRepository `json:"repository"`
	Events     []struct{ Reason string }
	Actor      *struct {
		State          string     `json:"state"`
		Syncs          int        `json:"syncs"`
		LastError      string     `json:"lastError"`
		NextPoll       *time.Time `json:"nextPoll"`
		NextDriftCheck *time.Time `json:"nextDriftCheck"`
	} `json:"actor"`
	ActorUnreachable string `json:"actorUnreachable"`
}

func cliStatus(t *testing.T, p plugin) {
	var rep cliStatusReport
	p.json(&rep, "status", "apps")
	if rep.Actor == nil || rep.Actor.State != "idle" || rep.Actor.Syncs < 1 || rep.Actor.NextPoll == nil || rep.Actor.NextDriftCheck == nil {
		t.Fatalf("status actor = %+v (unreachable %q), want idle with a sync and both timers due", rep.Actor, rep.ActorUnreachable)
	}
	if d := time.Until(*rep.Actor.NextPoll); d <= 0 || d > 2*time.Hour {
		t.Fatalf("next poll in %v, want within the 1h interval (with jitter)", d)
	}
	if len(rep.Repository.Status.Inventory) != 1 || len(rep.Events) == 0 || rep.Events[len(rep.Events)-1].Reason != "Synced" {
		t.Fatalf("status: inventory %v, events %+v", rep.Repository.Status.Inventory, rep.Events)
	}
	text := p.want(0, "status", "apps")
	for _, want := range []string{"Inventory:", "1 objects", "Ready", "State:", "idle", "Next poll:"} {
		if !strings.Contains(text, want) {
			t.Fatalf("status lacks %q:\n%s", want, text)
		}
	}
	// The controller out of reach: the API server's view still shows.
	away := plugin{t: t, kubeconfig: p.kubeconfig, ns: p.ns, extra: []string{"--controller-url", "http://" + freeAddr(t)}}
	text = away.want(0, "status", "apps")
	if !strings.Contains(text, "unreachable") || !strings.Contains(text, "1 objects") {
		t.Fatalf("status without a controller:\n%s", text)
	}
}

func cliTree(t *testing.T, p plugin, ns string) {
	var nodes []struct {
		Ref    v1alpha1.ObjectRef `json:"ref"`
		Health string             `json:"health"`
	}
	p.json(&nodes, "tree", "apps")
	if len(nodes) != 1 || nodes[0].Ref.Kind != "ConfigMap" || nodes[0].Ref.Name != "a" || nodes[0].Health != "Current" {
		t.Fatalf("tree = %+v, want ConfigMap a Current", nodes)
	}
	text := p.want(0, "tree", "apps")
	if !strings.Contains(text, "└── ConfigMap "+ns+"/a") || !strings.Contains(text, "Current") {
		t.Fatalf("tree:\n%s", text)
	}
}

func cliDiff(t *testing.T, p plugin, ns string) {
	p.want(0, "diff", "apps")
	// Edit the live object: git would put it back.
	patch := []byte(`{"data":{"value":"edited"}}`)
	if _, err := env.Kube.CoreV1().ConfigMaps(ns).Patch(context.Background(), "a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	out := p.want(1, "diff", "apps")
	for _, want := range []string{"# update ConfigMap " + ns + "/a", "-  value: edited", "+  value: \"1\""} {
		if !strings.Contains(out, want) {
			t.Fatalf("diff after an edit lacks %q:\n%s", want, out)
		}
	}
	// A local directory before pushing: a new Secret, its value masked.
	dir := t.TempDir()
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: %s\nstringData:\n  password: hunter2-very-secret\n", ns)
	for name, body := range map[string]string{"a.yaml": configMapYAML("a", ns, "edited"), "s.yaml": secret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out = p.want(1, "diff", "apps", "--local", dir)
	if !strings.Contains(out, "# create Secret "+ns+"/s") || strings.Contains(out, "hunter2") || strings.Contains(out, "ConfigMap") {
		t.Fatalf("diff --local: want only the Secret, masked:\n%s", out)
	}
}

func cliSync(t *testing.T, p plugin, ns string, commit func(string, map[string]string) string) {
	bad := commit("broken", map[string]string{"b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, map]\n"})
	out, errOut, code := p.run("sync", "apps", "--wait", "--timeout", "90s")
	if code != 1 || !strings.Contains(out, "Failed") || !strings.Contains(errOut, "b.yaml") {
		t.Fatalf("sync --wait of a failing commit: exit %d, want 1 naming b.yaml\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if got := getRepo(t, ns, "apps").Status.LastAttemptedCommit; got != bad {
		t.Fatalf("attempted %s, want the broken commit %s", got, bad)
	}
	good := commit("fixed", map[string]string{"b.yaml": configMapYAML("b", ns, "2")})
	out = p.want(0, "sync", "apps", "--wait", "--timeout", "90s")
	if !strings.Contains(out, "Synced") {
		t.Fatalf("sync --wait of a good commit:\n%s", out)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, good, 5*time.Second)
	out, errOut, code = p.run("sync", "apps", "--wait", "--timeout", "1ms")
	if code != 3 || !strings.Contains(errOut, "--timeout") {
		t.Fatalf("sync --wait that runs out of time: exit %d\n%s\n%s", code, out, errOut)
	}
}

func cliSuspend(t *testing.T, p plugin, ns string) {
	p.want(0, "suspend", "apps")
	if !getRepo(t, ns, "apps").Spec.Suspend {
		t.Fatal("suspend did not set spec.suspend")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		var rep cliStatusReport
		p.json(&rep, "status", "apps")
		if rep.Actor == nil || rep.Actor.State != "suspended" || rep.Actor.NextPoll != nil {
			return fmt.Errorf("actor %+v, want suspended without a poll due", rep.Actor)
		}
		return nil
	})
	p.want(0, "resume", "apps")
	if getRepo(t, ns, "apps").Spec.Suspend {
		t.Fatal("resume did not clear spec.suspend")
	}
}

func cliCheck(t *testing.T, p plugin, ctrl *proc) {
	var results []struct {
		Check  string
		OK     bool
		Detail string
	}
	withWebhook := plugin{t: t, kubeconfig: p.kubeconfig, ns: p.ns, extra: append(p.extra, "--webhook-url", "http://"+ctrl.webhook)}
	withWebhook.json(&results, "check")
	if len(results) != 4 {
		t.Fatalf("check = %+v, want 4 results", results)
	}
	for _, r := range results {
		if !r.OK {
			t.Fatalf("check %s failed: %s", r.Check, r.Detail)
		}
	}
	// Without a way to the controller (no Service in this cluster) the
	// CRD still checks out, the rest fails, and the exit code says so.
	out := plugin{t: t, kubeconfig: p.kubeconfig, ns: p.ns}.want(1, "check")
	if !strings.Contains(out, "ok    CRD") {
		t.Fatalf("check without a controller:\n%s", out)
	}
	if !strings.Contains(out, "FAIL  controller") {
		t.Fatalf("check without a controller:\n%s", out)
	}
}

// adminKubeconfig writes the control plane's admin kubeconfig: the CLI runs
// as the user, who has more rights than the controller's ServiceAccount.
func adminKubeconfig(t testing.TB) string {
	t.Helper()
	kc, err := env.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig-admin")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
