package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/false-systems/alumiini/actors"
)

// RepositoryKind is the cluster kind of the per-repository virtual actor.
// Its identity is the GitRepository's "namespace/name"; disthash places it
// on the member that rendezvous hashing picks, which is the owner.
const RepositoryKind = "alumiini-repository"

// errorField carries a Handler's error back to the caller in the reply;
// notFoundField, set with it, says that error was actors.ErrNotFound.
const (
	errorField    = "error"
	notFoundField = "notFound"
)

// Handler answers a request about one repository on the member that owns
// it (for a webhook: hand the commit to the local repository actor). It
// runs in the repository's virtual actor, so it must not block for long.
type Handler func(key string, req *structpb.Struct) (*structpb.Struct, error)

// Config configures a Node.
type Config struct {
	// Name is the cluster name: members with the same name form a cluster.
	Name string
	// Host and Port are where the member listens for member traffic (gRPC);
	// Port 0 picks a free port. AdvertisedHost, when set, is the address
	// the others dial instead (host:port, the Pod IP in a cluster).
	Host           string
	Port           int
	AdvertisedHost string
	Lease          LeaseConfig
	Handler        Handler
}

// Node is this replica's membership: the engine's cluster, the Lease
// provider behind it, and the answer to "do I own this repository".
type Node struct {
	Cluster  *cluster.Cluster
	provider *LeaseProvider
	sub      *eventstream.Subscription
	changed  chan struct{}
	stop     sync.Once

	settle time.Duration // how long a newly gained repository waits

	mu        sync.RWMutex
	rdv       *cluster.Rendezvous // the engine's placement over the current topology
	settled   *cluster.Rendezvous // the last placement that stood for settle
	changedAt time.Time
	members   int
	current   map[string]bool // addresses of the current topology's members
}

// Start joins the cluster as a member of system (which must not have
// remoting started yet) and returns once this member's Lease is written.
func Start(system *actor.ActorSystem, cfg Config) (n *Node, err error) {
	if cfg.Name == "" || cfg.Handler == nil {
		return nil, errors.New("cluster: Name and Handler are required")
	}
	provider, err := NewLeaseProvider(cfg.Lease)
	if err != nil {
		return nil, err
	}
	var opts []remote.ConfigOption
	if cfg.AdvertisedHost != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.AdvertisedHost))
	}
	kind := cluster.NewKind(RepositoryKind, actor.PropsFromProducer(func() actor.Actor {
		return &repositoryGrain{handle: cfg.Handler}
	}))
	// Membership is the Leases' alone. The engine's gossip would also block
	// a member whose gossip heartbeat it missed for a while (20s by
	// default, which a busy member can miss): that member would still renew
	// its Lease and run its repositories while the others took them over.
	c := cluster.New(system, cluster.Configure(cfg.Name, provider, disthash.New(),
		remote.Configure(cfg.Host, cfg.Port, opts...), cluster.WithKinds(kind),
		cluster.WithHeartbeatExpiration(math.MaxInt64)))
	n = &Node{Cluster: c, provider: provider, changed: make(chan struct{}, 1), rdv: cluster.NewRendezvous(),
		settled: cluster.NewRendezvous(), settle: 3 * provider.cfg.RenewEvery}
	n.sub = system.EventStream.Subscribe(n.onEvent)
	defer func() {
		// cluster.StartMember panics when the provider fails to start.
		if r := recover(); r != nil {
			system.EventStream.Unsubscribe(n.sub)
			if c.Remote != nil {
				c.Remote.Shutdown(false) // free the member port
			}
			n, err = nil, fmt.Errorf("cluster: joining %q as a member: %v", cfg.Name, r)
		}
	}()
	c.StartMember()
	return n, nil
}

func (n *Node) onEvent(ev any) {
	t, ok := ev.(*cluster.ClusterTopology)
	if !ok {
		return
	}
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(t.Members)
	current := make(map[string]bool, len(t.Members))
	for _, m := range t.Members {
		current[m.Address()] = true
	}
	n.mu.Lock()
	if time.Since(n.changedAt) >= n.settle {
		n.settled = n.rdv
	}
	n.rdv, n.changedAt, n.members, n.current = rdv, time.Now(), len(t.Members), current
	n.mu.Unlock()
	n.notify()
	// Repositories gained now become owned after settle: say so again then.
	time.AfterFunc(n.settle, n.notify)
}

func (n *Node) notify() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// Members is the number of members in this member's current view. (The
// engine's MemberList.Members reads its set without a lock: use this.)
func (n *Node) Members() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.members
}

// Address is this member's host:port for member traffic.
func (n *Node) Address() string { return n.Cluster.ActorSystem.Address() }

// Owner returns the address of the member that owns repository key
// ("namespace/name") in this member's view, or "" with no members.
func (n *Node) Owner(key string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.rdv.GetByClusterIdentity(cluster.NewClusterIdentity(key, RepositoryKind))
}

// Owns reports whether this member should run repository key: the engine
// places it here, this member's Lease is fresh enough that no other member
// can have taken the repository over, and, for a repository that the last
// topology change moved here, its previous owner has let go. A previous
// owner that is still a member lets go when it sees the change, which
// every member does within two renew periods: the repository waits for
// settle. A previous owner that left the member list has let go already:
// it left gracefully after stopping its actors, or its Lease went
// unrenewed for the membership timeout, and it fenced itself before that.
// Its repositories are owned at once, so a crash costs the timeout only.
func (n *Node) Owns(key string) bool {
	if !n.provider.Fresh() {
		return false
	}
	me, id := n.Address(), cluster.NewClusterIdentity(key, RepositoryKind)
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.rdv.GetByClusterIdentity(id) != me {
		return false
	}
	if time.Since(n.changedAt) >= n.settle {
		return true
	}
	// settled is empty until this member's first topology stood for
	// settle: a member that just started waits, whatever it sees.
	prev := n.settled.GetByClusterIdentity(id)
	return prev == me || (prev != "" && !n.current[prev])
}

// Changed receives a value after the member list changed, and again when
// the repositories it moved here have settled: time to call Owns again for
// every repository.
func (n *Node) Changed() <-chan struct{} { return n.changed }

// Lost is closed when this member's Lease expired (see LeaseProvider.Lost).
func (n *Node) Lost() <-chan struct{} { return n.provider.Lost() }

// Request delivers req to the owner of repository key through the engine
// (placement, activation and gRPC) and returns the owner Handler's reply.
// An error of that Handler comes back with its message, and wraps
// actors.ErrNotFound when it did. Request returns when ctx is done, even
// if the engine is still waiting.
func (n *Node) Request(ctx context.Context, key string, req *structpb.Struct) (*structpb.Struct, error) {
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("cluster: request for %s: %w", key, context.DeadlineExceeded)
	}
	// The engine's timeout does not bound its identity lookup: when this
	// member has no cached address for the virtual actor (as after the
	// owner's connection failed), the lookup waits up to 5s of its own.
	type result struct {
		res any
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := n.Cluster.Request(key, RepositoryKind, req, cluster.WithTimeout(timeout))
		done <- result{res, err}
	}()
	var res any
	var err error
	select {
	case r := <-done:
		res, err = r.res, r.err
	case <-ctx.Done():
		err = fmt.Errorf("no answer: %w", ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: request for %s to its owner %s: %w", key, n.ownerName(key), err)
	}
	reply, ok := res.(*structpb.Struct)
	if !ok {
		return nil, fmt.Errorf("cluster: request for %s: unexpected reply %T", key, res)
	}
	if msg, ok := reply.Fields[errorField]; ok {
		return nil, fmt.Errorf("cluster: owner %s of %s: %w", n.ownerName(key), key,
			&ownerError{msg: msg.GetStringValue(), notFound: reply.Fields[notFoundField].GetBoolValue()})
	}
	return reply, nil
}

// ownerName is Owner for messages.
func (n *Node) ownerName(key string) string {
	if o := n.Owner(key); o != "" {
		return o
	}
	return "(none: this member sees no members)"
}

// ownerError is the owner Handler's error as the caller sees it: the
// message, and whether it was actors.ErrNotFound, so that a caller can tell
// "the owner runs no such actor" from "the owner could not answer".
type ownerError struct {
	msg      string
	notFound bool
}

func (e *ownerError) Error() string { return e.msg }

func (e *ownerError) Is(target error) bool { return e.notFound && target == actors.ErrNotFound }

// Stop leaves the cluster. Graceful deletes this member's Lease so the
// others take its repositories over at once.
// Calls after the first do nothing.
func (n *Node) Stop(graceful bool) {
	n.stop.Do(func() {
		n.Cluster.ActorSystem.EventStream.Unsubscribe(n.sub)
		// The engine shuts its provider down only when graceful.
		_ = n.provider.Shutdown(false)
		n.Cluster.Shutdown(graceful)
	})
}

// repositoryGrain is the virtual actor of one repository on its owner.
type repositoryGrain struct {
	handle Handler
}

func (g *repositoryGrain) Receive(ctx actor.Context) {
	req, ok := ctx.Message().(*structpb.Struct)
	if !ok || ctx.Sender() == nil {
		return
	}
	id := cluster.GetClusterIdentity(ctx)
	if id == nil {
		ctx.Respond(errorReply(errors.New("virtual actor without a cluster identity")))
		return
	}
	reply, err := g.handle(id.Identity, req)
	if err != nil {
		reply = errorReply(err)
	} else if reply == nil {
		reply = &structpb.Struct{}
	}
	ctx.Respond(reply)
}

func errorReply(err error) *structpb.Struct {
	reply := &structpb.Struct{Fields: map[string]*structpb.Value{errorField: structpb.NewStringValue(err.Error())}}
	if errors.Is(err, actors.ErrNotFound) {
		reply.Fields[notFoundField] = structpb.NewBoolValue(true)
	}
	return reply
}
