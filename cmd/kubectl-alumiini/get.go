package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func newGet(o *options) *cobra.Command {
	var all, watchFlag bool
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List GitRepositories: ready, phase, source, commit, last sync, suspended, message",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			ns := c.namespace
			if all {
				ns = ""
			}
			opts := metav1.ListOptions{}
			if len(args) == 1 {
				opts.FieldSelector = "metadata.name=" + args[0]
			}
			if watchFlag {
				return o.watchRepos(cmd.Context(), c, ns, opts, all)
			}
			return o.listRepos(cmd.Context(), c, ns, opts, all, len(args) == 1)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list GitRepositories of every namespace")
	cmd.Flags().BoolVarP(&watchFlag, "watch", "w", false, "after listing, print a row whenever a GitRepository changes")
	return cmd
}

func (o *options) listRepos(ctx context.Context, c *clients, ns string, opts metav1.ListOptions, all, one bool) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	list, err := c.repos(ns).List(ctx, opts)
	if err != nil {
		return fmt.Errorf("list GitRepositories: %w", err)
	}
	if one && len(list.Items) == 0 {
		return fmt.Errorf("GitRepository %s/%s not found", c.namespace, opts.FieldSelector[len("metadata.name="):])
	}
	if o.output == "yaml" || o.output == "json" {
		if one {
			return printObject(o.stdout, o.output, list.Items[0].Object)
		}
		return printObject(o.stdout, o.output, list.Object)
	}
	t := o.newTable(all)
	for i := range list.Items {
		if err := t.row(&list.Items[i]); err != nil {
			return err
		}
	}
	if len(list.Items) == 0 {
		fmt.Fprintf(o.stderr, "No GitRepositories found in %s.\n", nsLabel(ns))
	}
	return t.flush()
}

func (o *options) watchRepos(ctx context.Context, c *clients, ns string, opts metav1.ListOptions, all bool) error {
	w, err := c.repos(ns).Watch(ctx, opts)
	if err != nil {
		return fmt.Errorf("watch GitRepositories: %w", err)
	}
	defer w.Stop()
	t := o.newTable(all)
	for ev := range w.ResultChan() {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok || ev.Type == watch.Bookmark {
			continue
		}
		if ev.Type == watch.Error {
			return fmt.Errorf("watch GitRepositories: %v", ev.Object)
		}
		if err := t.row(u); err != nil {
			return err
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

func nsLabel(ns string) string {
	if ns == "" {
		return "any namespace"
	}
	return "namespace " + ns
}

// table prints GitRepositories as kubectl does.
type table struct {
	tw      *tabwriter.Writer
	all     bool
	wide    bool
	header  bool
	paint   painter
	now     time.Time
	printed bool
}

func (o *options) newTable(all bool) *table {
	return &table{tw: tabwriter.NewWriter(o.stdout, 3, 0, 3, ' ', 0), all: all, wide: o.output == "wide",
		paint: painter(isTerminal(o.stdout)), now: time.Now()}
}

func (t *table) row(u *unstructured.Unstructured) error {
	repo, err := toRepo(u)
	if err != nil {
		return err
	}
	if !t.printed {
		t.printed = true
		t.write(strings.Fields("NAME READY PHASE SOURCE COMMIT LAST-SYNC SUSPENDED MESSAGE"), "NAMESPACE", "GENERATION", "INVENTORY")
	}
	st := repo.Status
	var synced time.Time
	if st.LastSyncTime != nil {
		synced = st.LastSyncTime.Time
	}
	msg := st.Message
	if !t.wide && len(msg) > 60 {
		msg = msg[:57] + "..."
	}
	t.write([]string{repo.Name, t.paint.state(readyOf(repo)), t.paint.state(string(st.Phase)), source(repo),
		orDash(st.LastSyncedShortCommit), age(synced, t.now), fmt.Sprint(repo.Spec.Suspend), msg},
		repo.Namespace, fmt.Sprint(repo.Generation), fmt.Sprint(len(st.Inventory)))
	return nil
}

// write prints cells, with the namespace first under -A and the wide
// columns last under -o wide.
func (t *table) write(cells []string, ns, generation, inventory string) {
	if t.all {
		cells = append([]string{ns}, cells...)
	}
	if t.wide {
		cells = append(cells, generation, inventory)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func readyOf(repo *v1alpha1.GitRepository) string {
	for _, c := range repo.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady {
			return string(c.Status)
		}
	}
	return "Unknown"
}

// source is url@ref/path.
func source(repo *v1alpha1.GitRepository) string {
	s := repo.Spec
	ref := s.Branch
	switch {
	case s.Commit != "":
		ref = s.Commit
		if len(ref) > 12 {
			ref = ref[:12]
		}
	case s.Tag != "":
		ref = s.Tag
	case ref == "":
		ref = v1alpha1.DefaultBranch
	}
	out := s.URL + "@" + ref
	if p := strings.Trim(s.Path, "/"); p != "" && p != "." {
		out += "/" + p
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
