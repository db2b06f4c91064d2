package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/types"
)

// Request operations understood by NewHandler.
const (
	opField   = "op"
	opWebhook = "webhook"
)

// Local is the part of the actor system (actors.System) that an owner's
// Handler drives. It must not block.
type Local interface {
	Webhook(key types.NamespacedName, commit string) error
}

// NewHandler returns the Handler an owner runs for requests routed to it:
// {"op": "webhook", "commit": c} queues a webhook sync of c locally, and
// {"op": "status"} answers the local actor's view of the repository
// (Node.Status).
func NewHandler(local Local, status StatusFunc) Handler {
	return func(key string, req *structpb.Struct) (*structpb.Struct, error) {
		switch op := req.Fields[opField].GetStringValue(); op {
		case opWebhook:
			nn, err := splitKey(key)
			if err != nil {
				return nil, err
			}
			return &structpb.Struct{}, local.Webhook(nn, req.Fields["commit"].GetStringValue())
		case opStatus:
			return statusReply(status, key)
		default:
			return nil, fmt.Errorf("unknown request %q for %s", op, key)
		}
	}
}

func splitKey(key string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return types.NamespacedName{}, fmt.Errorf("repository key %q: want namespace/name", key)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// Sink is the webhook sink (webhook.Sink) of a member: the owner queues
// the push on its own actor; any other member forwards it to the owner
// through the cluster, on a goroutine so that the HTTP reply never waits.
type Sink struct {
	Node  *Node
	Local Local
	// Fallback, when set, takes a push that could not be forwarded (the
	// owner is unreachable): cmd/alumiini hands it over through the
	// GitRepository's requestedAt annotation, which the owner watches.
	Fallback Local
	Timeout  time.Duration // bound on one forward (default 10s)
	Log      *zap.Logger
}

// Webhook implements webhook.Sink.
func (s *Sink) Webhook(key types.NamespacedName, commit string) error {
	k := key.String()
	if s.Node.Owns(k) {
		return s.Local.Webhook(key, commit)
	}
	go s.forward(k, commit)
	return nil
}

func (s *Sink) forward(key, commit string) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req := &structpb.Struct{Fields: map[string]*structpb.Value{
		opField: structpb.NewStringValue(opWebhook), "commit": structpb.NewStringValue(commit),
	}}
	_, err := s.Node.Request(ctx, key, req)
	if err == nil {
		return
	}
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	if s.Fallback == nil {
		log.Warn("cluster: forwarding a webhook to the repository's owner failed; the next poll picks the commit up",
			zap.String("repository", key), zap.String("commit", commit), zap.Error(err))
		return
	}
	log.Warn("cluster: forwarding a webhook to the repository's owner failed; handing it over through the GitRepository instead",
		zap.String("repository", key), zap.String("commit", commit), zap.Error(err))
	nn, _ := splitKey(key)
	if err := s.Fallback.Webhook(nn, commit); err != nil {
		log.Warn("cluster: handing a webhook over failed; the next poll picks the commit up", zap.String("repository", key), zap.Error(err))
	}
}
