package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func newSync(o *options) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "sync NAME",
		Short: "Request a sync now (the requestedAt annotation); with --wait, follow it to its outcome",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			at := time.Now().UTC().Format(time.RFC3339Nano)
			rv, err := patchRepo(cmd.Context(), c, args[0], map[string]any{"metadata": map[string]any{
				"annotations": map[string]string{v1alpha1.AnnotationRequestedAt: at}}})
			if err != nil {
				return err
			}
			fmt.Fprintf(o.stdout, "sync of %s/%s requested at %s\n", c.namespace, args[0], at)
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return o.follow(ctx, c, args[0], at, rv)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the outcome, printing each phase; exit 1 when the sync fails")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits (exit 3 when it runs out)")
	return cmd
}

// patchRepo merge-patches a GitRepository and returns its new resourceVersion.
func patchRepo(ctx context.Context, c *clients, name string, patch map[string]any) (string, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	u, err := c.repos(c.namespace).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "kubectl-alumiini"})
	if err != nil {
		return "", fmt.Errorf("patch GitRepository %s/%s: %w", c.namespace, name, err)
	}
	return u.GetResourceVersion(), nil
}

// follow watches the GitRepository from the patch on until the sync of
// requestedAt at ends. A sync that fails before applying (a fetch error)
// does not record requestedAt, so a Syncing phase seen after the request
// followed by Synced or Failed is an outcome too.
func (o *options) follow(ctx context.Context, c *clients, name, at, rv string) error {
	var last v1alpha1.Phase
	gaveUp := func() error {
		return exitCode{code: exitTimeout, err: fmt.Errorf("gave up waiting for the sync of %s/%s (phase %q): %w; raise --timeout or see `kubectl alumiini status %s`", c.namespace, name, orDash(string(last)), ctx.Err(), name)}
	}
	w, err := c.repos(c.namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
	if err != nil && ctx.Err() != nil {
		return gaveUp()
	}
	if err != nil {
		return fmt.Errorf("watch GitRepository %s/%s: %w", c.namespace, name, err)
	}
	defer w.Stop()
	prog := newProgress(o.stderr, "waiting for the controller to pick up the request")
	defer prog.stop()
	paint := painter(isTerminal(o.stdout))
	sawSyncing := false
	for {
		select {
		case <-ctx.Done():
			return gaveUp()
		case ev, ok := <-w.ResultChan():
			if !ok && ctx.Err() != nil {
				return gaveUp()
			}
			if !ok {
				return fmt.Errorf("watch of GitRepository %s/%s closed", c.namespace, name)
			}
			u, isObj := ev.Object.(*unstructured.Unstructured)
			if ev.Type == watch.Deleted {
				return errors.New("the GitRepository was deleted while waiting")
			}
			if !isObj {
				continue
			}
			repo, err := toRepo(u)
			if err != nil {
				return err
			}
			st := repo.Status
			if st.Phase != last {
				last = st.Phase
				prog.stop()
				fmt.Fprintf(o.stdout, "%s  %s  %s\n", time.Now().Format("15:04:05"), paint.state(string(st.Phase)), st.Message)
				prog = newProgress(o.stderr, "phase "+string(st.Phase))
			}
			sawSyncing = sawSyncing || st.Phase == v1alpha1.PhaseSyncing
			done := (st.LastHandledRequestedAt == at || sawSyncing) &&
				(st.Phase == v1alpha1.PhaseSynced || st.Phase == v1alpha1.PhaseFailed)
			if done && st.Phase == v1alpha1.PhaseFailed {
				return negative("sync of %s/%s failed: %s", c.namespace, name, st.Message)
			}
			if done {
				return nil
			}
		}
	}
}

func newSuspend(o *options, suspend bool) *cobra.Command {
	use, short := "suspend NAME", "Stop syncing a GitRepository (spec.suspend: true)"
	if !suspend {
		use, short = "resume NAME", "Sync a suspended GitRepository again (spec.suspend: false)"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			if _, err := patchRepo(cmd.Context(), c, args[0], map[string]any{"spec": map[string]any{"suspend": suspend}}); err != nil {
				return err
			}
			verb := "suspended"
			if !suspend {
				verb = "resumed"
			}
			fmt.Fprintf(o.stdout, "GitRepository %s/%s %s\n", c.namespace, args[0], verb)
			return nil
		},
	}
}
