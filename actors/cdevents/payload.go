package cdevents

import (
	"fmt"
	"strings"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// specVersion is the CDEvents specification the payloads follow; the
// shapes below follow its JSON schemas, which cdevents_test.go checks.
const specVersion = "0.4.1"

// Event types. Deployments map to the spec's pipelineRun events; the rest
// have no CDEvents 0.4 type with their meaning and use the custom
// dev.cdeventsx namespace, whose subject is "<tool>-<subject>".
const (
	typePipelineRunStarted  = "dev.cdevents.pipelinerun.started.0.2.0"
	typePipelineRunFinished = "dev.cdevents.pipelinerun.finished.0.2.0"
	typeRepositoryFetched   = "dev.cdeventsx.alumiini-repository.fetched.0.1.0"
	typeDriftDetected       = "dev.cdeventsx.alumiini-drift.detected.0.1.0"
	typeDriftCorrected      = "dev.cdeventsx.alumiini-drift.corrected.0.1.0"
	typeHandedOver          = "dev.cdeventsx.alumiini-rollout.handedover.0.1.0"
)

// Outcomes of dev.cdevents.pipelinerun.finished.
const (
	outcomeSuccess = "success"
	outcomeFailure = "failure"
)

// cdevent is the whole CDEvent, sent as the CloudEvent's data.
type cdevent struct {
	Context    eventContext `json:"context"`
	Subject    subject      `json:"subject"`
	CustomData *details     `json:"customData,omitempty"`
}

type eventContext struct {
	Version   string `json:"version"`
	ID        string `json:"id"`
	Source    string `json:"source"`
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
}

type subject struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Content any    `json:"content"`
}

// pipelineRun is the subject content of the pipelinerun events; the schema
// allows no other fields, which is why details travel in customData there.
type pipelineRun struct {
	PipelineName string `json:"pipelineName"`
	URL          string `json:"url"`
	Outcome      string `json:"outcome,omitempty"`
	Errors       string `json:"errors,omitempty"`
}

// details is what ALUMIINI knows about the occurrence: the subject content
// of custom events and the customData of standard ones.
type details struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	URL       string `json:"url,omitempty"`
	Commit    string `json:"commit,omitempty"`
	Path      string `json:"path,omitempty"`
	Trigger   string `json:"trigger,omitempty"`
	*counts
	Message string `json:"message,omitempty"`
}

// counts appear only on events that report a result.
type counts struct {
	Applied int `json:"applied"`
	Pruned  int `json:"pruned"`
	Failed  int `json:"failed"`
	Drifted int `json:"drifted"`
}

// eventType is the CDEvents type of each kind.
func (k Kind) eventType() string {
	switch k {
	case RepositoryFetched:
		return typeRepositoryFetched
	case DeploymentStarted:
		return typePipelineRunStarted
	case DeploymentFinished, DeploymentFailed:
		return typePipelineRunFinished
	case DriftDetected:
		return typeDriftDetected
	case DriftCorrected:
		return typeDriftCorrected
	case Handover:
		return typeHandedOver
	}
	return ""
}

// build renders ev as a CDEvent that happened at when. runID names the pipelineRun that
// deployment events share; the other kinds ignore it.
func build(ev Event, id, source, runID string, when time.Time) (cdevent, error) {
	typ := ev.Kind.eventType()
	if typ == "" {
		return cdevent{}, fmt.Errorf("unknown event kind %d", ev.Kind)
	}
	d := &details{Namespace: ev.Namespace, Name: ev.Name, URL: ev.URL, Commit: ev.Commit,
		Path: ev.Path, Trigger: ev.Trigger, Message: ev.Message}
	switch ev.Kind {
	case DeploymentFinished, DeploymentFailed, DriftDetected, DriftCorrected:
		d.counts = &counts{Applied: ev.Applied, Pruned: ev.Pruned, Failed: ev.Failed, Drifted: ev.Drifted}
	}
	out := cdevent{Context: eventContext{Version: specVersion, ID: id, Source: source, Type: typ,
		Timestamp: when.UTC().Format(time.RFC3339Nano)}}
	key := ev.Namespace + "/" + ev.Name
	switch ev.Kind {
	case DeploymentStarted, DeploymentFinished, DeploymentFailed:
		run := pipelineRun{PipelineName: key, URL: apiPath(ev.Namespace, ev.Name)}
		switch ev.Kind {
		case DeploymentFinished:
			run.Outcome = outcomeSuccess
		case DeploymentFailed:
			run.Outcome, run.Errors = outcomeFailure, ev.Message
		}
		out.Subject = subject{ID: key + "/" + runID, Type: "pipelineRun", Content: run}
		out.CustomData = d
	default:
		out.Subject = subject{ID: key, Type: customSubject(typ), Content: d}
	}
	return out, nil
}

// customSubject extracts "<tool>-<subject>" from a dev.cdeventsx type.
func customSubject(typ string) string {
	s, _, _ := strings.Cut(strings.TrimPrefix(typ, "dev.cdeventsx."), ".")
	return s
}

// apiPath is where the GitRepository, and so the outcome of its runs, can
// be read: the closest thing to a pipelineRun URL that ALUMIINI has.
func apiPath(namespace, name string) string {
	return fmt.Sprintf("/apis/%s/%s/namespaces/%s/gitrepositories/%s",
		v1alpha1.Group, v1alpha1.Version, namespace, name)
}
