package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// treeNode is one inventory object and its health (kstatus).
type treeNode struct {
	Ref     v1alpha1.ObjectRef `json:"ref"`
	Health  string             `json:"health"`
	Message string             `json:"message,omitempty"`
}

func newTree(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "tree NAME",
		Short: "The objects a GitRepository applied (its inventory), with their kinds and health",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, err := o.loadRepo(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			mapper, err := o.kube.ToRESTMapper()
			if err != nil {
				return fmt.Errorf("REST mapper: %w", err)
			}
			nodes := make([]treeNode, 0, len(repo.Status.Inventory))
			for _, ref := range repo.Status.Inventory {
				nodes = append(nodes, health(cmd.Context(), c, mapper, ref))
			}
			if o.output == "json" || o.output == "yaml" {
				return printObject(o.stdout, o.output, nodes)
			}
			return printTree(o.stdout, painter(isTerminal(o.stdout)), repo, nodes)
		},
	}
}

// health reads one object and computes its kstatus.
func health(ctx context.Context, c *clients, mapper meta.RESTMapper, ref v1alpha1.ObjectRef) treeNode {
	n := treeNode{Ref: ref}
	m, err := mapper.RESTMapping(schema.GroupKind{Group: ref.Group, Kind: ref.Kind}, ref.Version)
	if err != nil {
		n.Health, n.Message = "Unknown", err.Error()
		return n
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	ri := c.dyn.Resource(m.Resource)
	get := ri.Get
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		get = ri.Namespace(ref.Namespace).Get
	}
	u, err := get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		n.Health, n.Message = "NotFound", "in the inventory but not in the cluster"
		return n
	case err != nil:
		n.Health, n.Message = "Unknown", err.Error()
		return n
	}
	r, err := status.Compute(u)
	if err != nil {
		n.Health, n.Message = "Unknown", err.Error()
		return n
	}
	n.Health, n.Message = r.Status.String(), r.Message
	return n
}

func printTree(w io.Writer, p painter, repo *v1alpha1.GitRepository, nodes []treeNode) error {
	fmt.Fprintf(w, "GitRepository %s/%s (%s)\n", repo.Namespace, repo.Name, source(repo))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, n := range nodes {
		branch := "├── "
		if i == len(nodes)-1 {
			branch = "└── "
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\n", branch, objectName(n.Ref), p.state(n.Health), n.Message)
	}
	return tw.Flush()
}
