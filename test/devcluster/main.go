// Command devcluster is `make run`: it runs the controller against the
// cluster of the current kubeconfig when one answers, and otherwise starts
// the tests' local control plane (kube-apiserver + etcd), installs the CRD,
// writes a kubeconfig, runs the controller, applies an example
// GitRepository that syncs this repository's examples/guestbook directory
// and prints what to try next. Ctrl-C stops everything it started.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

func main() {
	bin := flag.String("bin", "bin/alumiini", "controller binary to run")
	state := flag.String("state", ".alumiini", "directory for the kubeconfig, webhook secret and git cache")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *bin, *state, flag.Args())
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		// Ctrl-C is the normal way out: everything stopped cleanly.
		fmt.Println("Stopped: the controller and everything make run started have exited.")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, state string, extra []string) error {
	if cfg, err := reachableCluster(); err == nil {
		fmt.Printf("Using the cluster at %s (current kubeconfig).\n", cfg.Host)
		return runController(ctx, bin, extra)
	}
	fmt.Println("No reachable cluster in the kubeconfig: starting a local control plane (first run builds it, about ten minutes).")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("Stopping the local control plane.")
		_ = env.Stop()
	}()
	paths, err := writeState(env, state)
	if err != nil {
		return err
	}
	args := append([]string{"--kubeconfig", paths.kubeconfig, "--webhook-secret-file", paths.secret, "--allow-file-urls",
		"--cache-dir", filepath.Join(state, "cache")}, extra...)
	ctrl := exec.CommandContext(ctx, bin, args...)
	ctrl.Stdout, ctrl.Stderr = os.Stdout, os.Stderr
	ctrl.Cancel = func() error { return ctrl.Process.Signal(syscall.SIGTERM) }
	ctrl.WaitDelay = 40 * time.Second
	if err := ctrl.Start(); err != nil {
		return fmt.Errorf("start %s (run make build first): %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- ctrl.Wait() }()
	if err := applyExample(ctx, env.Dynamic); err != nil {
		return err
	}
	go reportSynced(ctx, env.Dynamic, paths)
	select {
	case err := <-done:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("controller exited: %v", err)
	case <-ctx.Done():
		// After a clean exit on SIGTERM, Wait reports the context's error;
		// an exit status of the controller's own is returned as it is.
		return <-done
	}
}

// reachableCluster loads the usual kubeconfig chain and asks the server for
// its version, so a stale kubeconfig does not count as a cluster.
func reachableCluster() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 5 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := dc.ServerVersion(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func runController(ctx context.Context, bin string, extra []string) error {
	cmd := exec.CommandContext(ctx, bin, extra...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 40 * time.Second
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

type statePaths struct{ kubeconfig, secret string }

func writeState(env *testenv.Env, dir string) (statePaths, error) {
	p := statePaths{kubeconfig: filepath.Join(dir, "kubeconfig"), secret: filepath.Join(dir, "webhook-secret")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	kc, err := env.KubeConfig()
	if err != nil {
		return p, err
	}
	if err := os.WriteFile(p.kubeconfig, kc, 0o600); err != nil {
		return p, err
	}
	if _, err := os.Stat(p.secret); errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		if err := os.WriteFile(p.secret, []byte(hex.EncodeToString(b)), 0o600); err != nil {
			return p, err
		}
	}
	return p, nil
}

// applyExample creates the GitRepository that syncs examples/guestbook from
// this repository's own history (the current branch, as committed).
func applyExample(ctx context.Context, dyn dynamic.Interface) error {
	root := testenv.RepoRoot()
	branch, err := exec.Command("git", "-C", root, "rev-parse", "--abbrev-ref", "HEAD").Output()
	if err != nil {
		return fmt.Errorf("find the current branch of %s: %w", root, err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "GitRepository",
		"metadata":   map[string]any{"name": "examples", "namespace": "default"},
		"spec": map[string]any{
			"url":      "file://" + root,
			"branch":   strings.TrimSpace(string(branch)),
			"path":     "examples/guestbook",
			"interval": "30s",
		},
	}}
	_, err = dyn.Resource(v1alpha1.GitRepositoryResource).Namespace("default").
		Apply(ctx, "examples", obj, metav1.ApplyOptions{FieldManager: "make-run", Force: true})
	if err != nil {
		return fmt.Errorf("apply the example GitRepository: %w", err)
	}
	return nil
}

// reportSynced waits for the example to sync, then prints next steps.
func reportSynced(ctx context.Context, dyn dynamic.Interface, p statePaths) {
	client := dyn.Resource(v1alpha1.GitRepositoryResource).Namespace("default")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		obj, err := client.Get(ctx, "examples", metav1.GetOptions{})
		if err != nil {
			continue
		}
		phase, _, _ := unstructured.NestedString(obj.Object, "status", "phase")
		commit, _, _ := unstructured.NestedString(obj.Object, "status", "lastSyncedCommit")
		if phase != string(v1alpha1.PhaseSynced) {
			continue
		}
		fmt.Printf(`
GitRepository default/examples is Synced at commit %s.

Try next:
  export KUBECONFIG=%s
  kubectl get gitrepositories -A
  kubectl -n guestbook get deploy,svc,cm -l alumiini.false.systems/name=examples
  kubectl -n guestbook edit configmap guestbook-config   # drift: corrected at the next check
  # edit examples/guestbook, commit, then trigger a sync through the webhook:
  body='{"url":"file://%s","ref":"refs/heads/%s","commit":"'$(git rev-parse HEAD)'"}'
  sig=$(printf '%%s' "$body" | openssl dgst -sha256 -hmac "$(cat %s)" | cut -d' ' -f2)
  curl -s -X POST -H "X-Signature: sha256=$sig" -d "$body" http://localhost:8080/webhook/generic

Ctrl-C stops the controller and the control plane.
`, commit, p.kubeconfig, testenv.RepoRoot(), branchOf(obj), p.secret)
		return
	}
}

func branchOf(obj *unstructured.Unstructured) string {
	b, _, _ := unstructured.NestedString(obj.Object, "spec", "branch")
	return b
}
