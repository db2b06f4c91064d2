// Package webhook receives push notifications from GitHub, GitLab, Bitbucket
// (Cloud and Server/Data Center) and generic senders. For each request it
// reads the bounded body, parses the provider's payload, finds the
// GitRepositories whose URL names the pushed repository, verifies the
// signature against each one's secret, and hands a {webhook, commit} trigger
// to a Sink for every repository that follows the pushed branch or tag.
//
// The handler never waits for a sync: it answers as soon as the triggers are
// queued. It knows nothing of actors beyond the Sink interface.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// DefaultMaxBodyBytes bounds a request body when Config.MaxBodyBytes is unset.
const DefaultMaxBodyBytes int64 = 1 << 20

// Sink receives verified pushes; the actor system implements it. It must not
// block.
type Sink interface {
	Webhook(key types.NamespacedName, commit string) error
}

// Repositories lists the GitRepositories known now (backed by the informer
// cache). Must be cheap: called per request.
type Repositories interface {
	List() []*v1alpha1.GitRepository
}

// Secrets resolves a Secret's key (for webhookSecretRef, key "token").
type Secrets interface {
	SecretValue(ctx context.Context, namespace, name, key string) ([]byte, error)
}

// Config tunes the handler. The zero value refuses every push: it has no
// secret and does not allow insecure pushes.
type Config struct {
	Secret        []byte                // controller-wide secret (may be nil)
	AllowInsecure bool                  // accept unsigned pushes when no secret applies
	MaxBodyBytes  int64                 // default DefaultMaxBodyBytes
	Metrics       prometheus.Registerer // optional: counter alumiini_webhook_requests_total{provider,result}
	Logger        *zap.Logger           // optional
}

// Outcomes of a request: the "status" of the JSON reply and the "result"
// label of the request counter.
const (
	resultTriggered    = "triggered"
	resultSuspended    = "suspended"
	resultIgnored      = "ignored"
	resultPong         = "pong"
	resultUnmatched    = "unmatched"
	resultUnauthorized = "unauthorized"
	resultInvalid      = "invalid"
	resultTooLarge     = "too_large"
	resultBadMethod    = "method_not_allowed"
	resultUnavailable  = "unavailable"
)

// reply is the JSON body of every answer. Repositories are named
// "namespace/name".
type reply struct {
	Status    string   `json:"status"`
	Message   string   `json:"message,omitempty"`
	Triggered []string `json:"triggered,omitempty"`
	Suspended []string `json:"suspended,omitempty"`
	Failed    []string `json:"failed,omitempty"`
}

type handler struct {
	cfg      Config
	repos    Repositories
	secrets  Secrets
	sink     Sink
	log      *zap.Logger
	requests *prometheus.CounterVec
	match    matcher
}

// NewHandler serves POST /webhook/{github,gitlab,bitbucket,generic}.
// secrets may be nil when no GitRepository uses webhookSecretRef.
func NewHandler(cfg Config, repos Repositories, secrets Secrets, sink Sink) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	log := cfg.Logger.Named("webhook")
	h := &handler{cfg: cfg, repos: repos, secrets: secrets, sink: sink, log: log,
		requests: requestCounter(cfg.Metrics, log)}
	mux := http.NewServeMux()
	for _, p := range providers() {
		mux.HandleFunc("/webhook/"+p.name, func(w http.ResponseWriter, r *http.Request) {
			h.serve(p, w, r)
		})
	}
	return mux
}

// requestCounter registers the request counter, reusing one that another
// handler already registered with the same registry.
func requestCounter(reg prometheus.Registerer, log *zap.Logger) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "alumiini_webhook_requests_total",
		Help: "Webhook requests by provider and result.",
	}, []string{"provider", "result"})
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		if existing, ok := dup.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	if err != nil {
		log.Warn("webhook request counter not registered", zap.Error(err))
	}
	return c
}

func (h *handler) serve(p provider, w http.ResponseWriter, r *http.Request) {
	code, rep := h.handle(p, w, r)
	h.requests.WithLabelValues(p.name, rep.Status).Inc()
	if code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An encoding error means the sender hung up; there is no one to tell.
	_ = json.NewEncoder(w).Encode(rep)
}

// handle runs one request: read, parse, verify, match, trigger.
func (h *handler) handle(p provider, w http.ResponseWriter, r *http.Request) (int, reply) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, reply{Status: resultBadMethod,
			Message: fmt.Sprintf("%s is not accepted: webhooks are delivered with POST", r.Method)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge, reply{Status: resultTooLarge, Message: fmt.Sprintf(
			"body exceeds %d bytes; raise the controller's webhook body limit if pushes are this large", tooLarge.Limit)}
	}
	if err != nil {
		return http.StatusBadRequest, reply{Status: resultInvalid, Message: "read body: " + err.Error()}
	}
	ev, err := p.parse(r.Header, body)
	if err != nil {
		return http.StatusBadRequest, reply{Status: resultInvalid, Message: fmt.Sprintf("%s payload: %v", p.name, err)}
	}
	if ev.ignore != "" {
		return http.StatusAccepted, reply{Status: resultIgnored, Message: ev.ignore}
	}

	verify := func(secret []byte) bool { return p.verify(r.Header, body, secret) }
	repos, err := h.authenticate(r.Context(), verify, h.match.candidates(h.repos.List(), ev.urls))
	if err != nil {
		h.log.Warn("webhook refused", zap.String("provider", p.name), zap.String("remote", r.RemoteAddr),
			zap.Strings("urls", ev.urls), zap.Error(err))
		return http.StatusUnauthorized, reply{Status: resultUnauthorized, Message: unauthorizedMessage(p, err)}
	}
	if ev.ping {
		return http.StatusOK, reply{Status: resultPong, Message: "pushes to this endpoint will be handled"}
	}
	if ev.allDeleted() {
		return http.StatusAccepted, reply{Status: resultIgnored, Message: "every pushed ref was deleted: nothing to sync"}
	}
	return h.trigger(p, ev, repos)
}

// trigger hands the push to every verified repository that follows one of
// the pushed refs.
func (h *handler) trigger(p provider, ev event, repos []*v1alpha1.GitRepository) (int, reply) {
	var rep reply
	for _, repo := range repos {
		c, ok := ev.changeFor(&repo.Spec)
		if !ok {
			continue
		}
		key := repo.Key()
		if repo.Spec.Suspend {
			rep.Suspended = append(rep.Suspended, key)
			continue
		}
		name := types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}
		if err := h.sink.Webhook(name, c.commit); err != nil {
			h.log.Error("webhook not handed to repository", zap.String("repository", key), zap.Error(err))
			rep.Failed = append(rep.Failed, key)
			continue
		}
		h.log.Info("webhook push", zap.String("provider", p.name), zap.String("repository", key),
			zap.String("ref", c.ref), zap.String("commit", c.commit))
		rep.Triggered = append(rep.Triggered, key)
	}
	switch {
	case len(rep.Triggered) > 0:
		rep.Status = resultTriggered
		return http.StatusAccepted, rep
	case len(rep.Failed) > 0:
		rep.Status, rep.Message = resultUnavailable, "the controller could not queue the sync; redeliver the webhook"
		return http.StatusServiceUnavailable, rep
	case len(rep.Suspended) > 0:
		rep.Status, rep.Message = resultSuspended, "every matching GitRepository is suspended (spec.suspend)"
		return http.StatusAccepted, rep
	}
	rep.Status = resultUnmatched
	rep.Message = fmt.Sprintf("no GitRepository with url %s follows %s; check spec.url and spec.branch or spec.tag",
		firstOr(ev.urls, "(none given)"), strings.Join(ev.refs(), ", "))
	return http.StatusNotFound, rep
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
