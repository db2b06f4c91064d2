package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// checkResult is one line of check.
type checkResult struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func newCheck(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Check the installation: CRD and its version, controller running, webhook reachable, versions match",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			controller, ctrlVersion := o.checkController(ctx, c)
			results := []checkResult{checkCRD(ctx, c), controller, o.checkWebhook(ctx, c), checkVersions(ctrlVersion)}
			if o.output == "json" || o.output == "yaml" {
				if err := printObject(o.stdout, o.output, results); err != nil {
					return err
				}
			} else {
				printChecks(o, results)
			}
			if slices.ContainsFunc(results, func(r checkResult) bool { return !r.OK }) {
				return negative("some checks failed")
			}
			return nil
		},
	}
}

func checkCRD(ctx context.Context, c *clients) checkResult {
	r := checkResult{Check: "CRD"}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	name := v1alpha1.GitRepositoryResource.Resource + "." + v1alpha1.Group
	u, err := c.dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		r.Detail = fmt.Sprintf("%s: %v (install deploy/crd)", name, err)
		return r
	}
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	var served []string
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if ok, _ := m["served"].(bool); ok {
			served = append(served, fmt.Sprint(m["name"]))
		}
	}
	r.OK = slices.Contains(served, v1alpha1.Version)
	r.Detail = fmt.Sprintf("%s serves %s", name, strings.Join(served, ", "))
	if !r.OK {
		r.Detail += "; this CLI needs " + v1alpha1.Version
	}
	return r
}

// checkController asks the controller for its version and its actors.
func (o *options) checkController(ctx context.Context, c *clients) (checkResult, string) {
	r := checkResult{Check: "controller"}
	body, code, err := o.controllerGet(ctx, c, "metrics", "/debug/version")
	if err != nil || code != http.StatusOK {
		r.Detail = unreachable(err, code, body)
		return r, ""
	}
	var v struct{ Version string }
	if err := json.Unmarshal(body, &v); err != nil {
		r.Detail = "unexpected /debug/version answer: " + err.Error()
		return r, ""
	}
	r.OK, r.Detail = true, "running, version "+v.Version
	body, code, err = o.controllerGet(ctx, c, "metrics", "/debug/repositories")
	var repos []json.RawMessage
	switch {
	case err == nil && code == http.StatusOK && json.Unmarshal(body, &repos) == nil:
		r.Detail += fmt.Sprintf(", leading, %d repository actors", len(repos))
	default:
		r.Detail += ", " + unreachable(err, code, body)
	}
	return r, v.Version
}

// checkWebhook wants any HTTP answer from the webhook port: the proxy
// answers 502/503 itself when nothing listens behind the Service.
func (o *options) checkWebhook(ctx context.Context, c *clients) checkResult {
	r := checkResult{Check: "webhook"}
	body, code, err := o.controllerGet(ctx, c, "webhook", "/webhook/generic")
	if err != nil || code == 0 || code == http.StatusBadGateway || code == http.StatusServiceUnavailable {
		r.Detail = unreachable(err, code, body)
		return r
	}
	r.OK, r.Detail = true, fmt.Sprintf("reachable (GET answered %d)", code)
	return r
}

func checkVersions(controller string) checkResult {
	r := checkResult{Check: "versions"}
	switch {
	case controller == "":
		r.Detail = "controller version unknown"
	case controller != version:
		r.Detail = fmt.Sprintf("kubectl-alumiini %s, controller %s: install the matching plugin", version, controller)
	default:
		r.OK, r.Detail = true, "kubectl-alumiini and controller are both "+version
	}
	return r
}

func unreachable(err error, code int, body []byte) string {
	if err != nil {
		return "unreachable: " + err.Error()
	}
	return fmt.Sprintf("answered %d: %s", code, strings.TrimSpace(string(body)))
}

func printChecks(o *options, results []checkResult) {
	p := painter(isTerminal(o.stdout))
	tw := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	for _, r := range results {
		mark := p.green("ok")
		if !r.OK {
			mark = p.red("FAIL")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mark, r.Check, r.Detail)
	}
	_ = tw.Flush()
}
