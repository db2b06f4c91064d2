package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func newCreate(o *options) *cobra.Command {
	var spec v1alpha1.GitRepositorySpec
	var interval time.Duration
	var secretRef string
	var export bool
	cmd := &cobra.Command{
		Use:   "create NAME --url URL [--branch B] [--path P] [--interval D] [--secret-ref S] [--export]",
		Short: "Create a GitRepository, or print its YAML with --export",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval > 0 {
				spec.Interval = metav1.Duration{Duration: interval}
			}
			if secretRef != "" {
				spec.SecretRef = &v1alpha1.LocalObjectReference{Name: secretRef}
			}
			if export {
				// Printing needs no cluster: the namespace comes from -n or
				// the kubeconfig when there is one.
				ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
				if err != nil || ns == "" {
					ns = "default"
				}
				u, err := newRepoObject(ns, args[0], spec)
				if err != nil {
					return err
				}
				format := o.output
				if format == "" {
					format = "yaml"
				}
				return printObject(o.stdout, format, u.Object)
			}
			c, err := o.clients()
			if err != nil {
				return err
			}
			u, err := newRepoObject(c.namespace, args[0], spec)
			if err != nil {
				return err
			}
			return o.createRepo(cmd.Context(), c, u)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.URL, "url", "", "git URL (https://, ssh:// or git@host:path)")
	f.StringVar(&spec.Branch, "branch", "", "branch to follow (default main)")
	f.StringVar(&spec.Tag, "tag", "", "tag to check out instead of a branch")
	f.StringVar(&spec.Path, "path", "", "manifest directory inside the repository")
	f.DurationVar(&interval, "interval", 0, "poll interval (default 5m)")
	f.StringVar(&secretRef, "secret-ref", "", "Secret with the git credentials, in the same namespace")
	f.StringVar(&spec.TargetNamespace, "target-namespace", "", "namespace for objects that name none")
	f.BoolVar(&export, "export", false, "print the GitRepository instead of creating it")
	_ = cmd.MarkFlagRequired("url")
	return cmd
}

func newRepoObject(ns, name string, spec v1alpha1.GitRepositorySpec) (*unstructured.Unstructured, error) {
	repo := &v1alpha1.GitRepository{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "GitRepository"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       spec,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(repo)
	if err != nil {
		return nil, fmt.Errorf("encode GitRepository: %w", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	// The status and creationTimestamp of an object not yet created are noise.
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	// Unset durations encode as "0s", which the API server would keep.
	for _, f := range []string{"interval", "reconcileInterval", "timeout"} {
		if v, _, _ := unstructured.NestedString(u.Object, "spec", f); v == "0s" {
			unstructured.RemoveNestedField(u.Object, "spec", f)
		}
	}
	return u, nil
}

func (o *options) createRepo(ctx context.Context, c *clients, u *unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := c.repos(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{FieldManager: "kubectl-alumiini"}); err != nil {
		return fmt.Errorf("create GitRepository %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	fmt.Fprintf(o.stdout, "GitRepository %s/%s created\n", u.GetNamespace(), u.GetName())
	return nil
}
