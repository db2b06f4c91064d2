package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/actors/view"
	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// statusReport is everything status shows; -o json|yaml prints it whole.
type statusReport struct {
	Repository       *v1alpha1.GitRepository `json:"repository"`
	Events           []eventLine             `json:"events"`
	Actor            *view.Repository        `json:"actor,omitempty"`
	ActorUnreachable string                  `json:"actorUnreachable,omitempty"`
}

type eventLine struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

func newStatus(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Conditions, inventory, recent Events, the last error and what the repository actor is doing",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, err := o.loadRepo(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rep := statusReport{Repository: repo}
			if rep.Events, err = recentEvents(cmd.Context(), c, repo, 5); err != nil {
				return err
			}
			rep.Actor, err = o.actor(cmd.Context(), c, repo.Namespace, repo.Name)
			if err != nil {
				// The API server's view is still worth showing.
				rep.ActorUnreachable = err.Error()
			}
			if o.output == "json" || o.output == "yaml" {
				return printObject(o.stdout, o.output, rep)
			}
			return printStatus(o.stdout, painter(isTerminal(o.stdout)), rep)
		},
	}
}

// actor asks the controller what the repository's actor is doing.
func (o *options) actor(ctx context.Context, c *clients, ns, name string) (*view.Repository, error) {
	body, code, err := o.controllerGet(ctx, c, "metrics", "/debug/repositories/"+ns+"/"+name)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("controller answered %d: %s", code, strings.TrimSpace(string(body)))
	}
	var v view.Repository
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("controller answer: %w", err)
	}
	return &v, nil
}

func recentEvents(ctx context.Context, c *clients, repo *v1alpha1.GitRepository, n int) ([]eventLine, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	list, err := c.kube.CoreV1().Events(repo.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=GitRepository,involvedObject.name=" + repo.Name})
	if err != nil {
		return nil, fmt.Errorf("Events of %s/%s: %w", repo.Namespace, repo.Name, err)
	}
	out := make([]eventLine, 0, len(list.Items))
	for _, e := range list.Items {
		out = append(out, eventLine{Time: eventTime(e), Type: e.Type, Reason: e.Reason, Message: e.Message})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

func eventTime(e corev1.Event) time.Time {
	for _, t := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time} {
		if !t.IsZero() {
			return t
		}
	}
	return e.CreationTimestamp.Time
}

func printStatus(w io.Writer, p painter, rep statusReport) error {
	repo, now := rep.Repository, time.Now()
	st := repo.Status
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s/%s\n", repo.Namespace, repo.Name)
	fmt.Fprintf(tw, "Source:\t%s\n", source(repo))
	fmt.Fprintf(tw, "Phase:\t%s\n", p.state(orDash(string(st.Phase))))
	fmt.Fprintf(tw, "Suspended:\t%v\n", repo.Spec.Suspend)
	fmt.Fprintf(tw, "Synced commit:\t%s (%s ago)\n", orDash(st.LastSyncedCommit), ageOf(st.LastSyncTime, now))
	fmt.Fprintf(tw, "Attempted commit:\t%s\n", orDash(st.LastAttemptedCommit))
	fmt.Fprintf(tw, "Inventory:\t%d objects\n", len(st.Inventory))
	fmt.Fprintf(tw, "Message:\t%s\n", st.Message)
	fmt.Fprintln(tw, "Conditions:")
	for _, c := range st.Conditions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, p.state(string(c.Status)), c.Reason, c.Message)
	}
	fmt.Fprintln(tw, "Events:")
	for _, e := range rep.Events {
		fmt.Fprintf(tw, "  %s ago\t%s\t%s\t%s\n", age(e.Time, now), e.Type, e.Reason, e.Message)
	}
	printActor(tw, p, rep, now)
	return tw.Flush()
}

func printActor(w io.Writer, p painter, rep statusReport, now time.Time) {
	fmt.Fprintln(w, "Controller:")
	a := rep.Actor
	if a == nil {
		fmt.Fprintf(w, "  %s\t%s\n", p.yellow("unreachable"), rep.ActorUnreachable)
		return
	}
	fmt.Fprintf(w, "  State:\t%s\n", p.state(a.State))
	fmt.Fprintf(w, "  Pending follow-up:\t%v\n", a.PendingFollowUp)
	fmt.Fprintf(w, "  Restarts:\t%d\n", a.Restarts)
	fmt.Fprintf(w, "  Syncs:\t%d (last trigger: %s)\n", a.Syncs, orDash(a.LastTrigger))
	if a.LastError != "" {
		fmt.Fprintf(w, "  Last error:\t%s\n", p.red(a.LastError))
	}
	fmt.Fprintf(w, "  Next poll:\t%s\n", due(a.NextPoll, now))
	fmt.Fprintf(w, "  Next drift check:\t%s\n", due(a.NextDriftCheck, now))
}

func due(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf("%s (%s)", t.Format(time.RFC3339), age(*t, now))
}

func ageOf(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return age(t.Time, now)
}
