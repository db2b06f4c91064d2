package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// requestTimeout bounds every single API or controller request.
const requestTimeout = 15 * time.Second

// clients are what a command needs to talk to the cluster.
type clients struct {
	dyn       dynamic.Interface
	kube      kubernetes.Interface
	namespace string
}

func (o *options) clients() (*clients, error) {
	cfg, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-alumiini/" + version
	ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("current namespace: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &clients{dyn: dyn, kube: kube, namespace: ns}, nil
}

func (c *clients) repos(ns string) dynamic.ResourceInterface {
	return c.dyn.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
}

// loadRepo connects and reads the GitRepository a command names.
func (o *options) loadRepo(ctx context.Context, name string) (*clients, *v1alpha1.GitRepository, error) {
	c, err := o.clients()
	if err != nil {
		return nil, nil, err
	}
	repo, err := c.getRepo(ctx, name)
	return c, repo, err
}

// getRepo reads one GitRepository of the current namespace.
func (c *clients) getRepo(ctx context.Context, name string) (*v1alpha1.GitRepository, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	u, err := c.repos(c.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("GitRepository %s/%s: %w", c.namespace, name, err)
	}
	return toRepo(u)
}

func toRepo(u *unstructured.Unstructured) (*v1alpha1.GitRepository, error) {
	var repo v1alpha1.GitRepository
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &repo); err != nil {
		return nil, fmt.Errorf("decode GitRepository %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &repo, nil
}

// controllerGet fetches path from one of the controller's ports: directly
// with --controller-url (metrics) or --webhook-url (webhook), else through
// the API server's service proxy, which RBAC guards (services/proxy).
func (o *options) controllerGet(ctx context.Context, c *clients, port, path string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	direct := map[string]string{"metrics": o.controllerURL, "webhook": o.webhookURL}[port]
	if direct != "" {
		return httpGet(ctx, strings.TrimSuffix(direct, "/")+path)
	}
	res := c.kube.CoreV1().Services(o.controllerNS).ProxyGet("http", o.controllerSvc, port, path, nil)
	body, err := res.DoRaw(ctx)
	var code int
	if se, ok := err.(interface{ Status() metav1.Status }); ok {
		code = int(se.Status().Code)
	} else if err == nil {
		code = http.StatusOK
	}
	if err != nil && code == 0 {
		return nil, 0, fmt.Errorf("service %s/%s port %s through the API server: %w", o.controllerNS, o.controllerSvc, port, err)
	}
	return body, code, nil
}

func httpGet(ctx context.Context, url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("controller URL %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("controller at %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return body, resp.StatusCode, err
}

// printObject writes v as YAML or JSON, as -o asks.
func printObject(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return exitCode{code: exitError, err: fmt.Errorf("-o %q: want yaml, json or wide", format)}
}

// isTerminal says whether w is a character device: colour and the
// progress line are only for people, never for pipes and files.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// painter colours text on a terminal and leaves it plain elsewhere.
type painter bool

func (p painter) paint(code, s string) string {
	if !p || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p painter) green(s string) string  { return p.paint("32", s) }
func (p painter) red(s string) string    { return p.paint("31", s) }
func (p painter) yellow(s string) string { return p.paint("33", s) }

// state colours a phase or health word by what it means.
func (p painter) state(s string) string {
	switch s {
	case "Synced", "True", "Current", "idle":
		return p.green(s)
	case "Failed", "False", "Failed:", "NotFound":
		return p.red(s)
	}
	return p.yellow(s)
}

// age is a kubectl-style short duration ("5m", "3h").
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + age(now, t)
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
