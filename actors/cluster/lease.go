package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	labelCluster  = "alumiini.false.systems/cluster"
	annotAddress  = "alumiini.false.systems/member-address"
	annotKinds    = "alumiini.false.systems/member-kinds"
	gcAfterLeases = 4 // a Lease unrenewed this many membership timeouts is deleted
)

// LeaseConfig configures LeaseProvider.
type LeaseConfig struct {
	Client    kubernetes.Interface
	Namespace string
	// Member names this replica, stable and unique in the cluster (the Pod
	// name). Its Lease is "<cluster name>-<Member>".
	Member string
	// Duration is the membership timeout: a member whose Lease has not been
	// seen renewed for this long is dropped, and a member that could not
	// renew its own Lease for this long stops owning anything.
	Duration time.Duration
	// RenewEvery is the renew and list period (default Duration/5).
	RenewEvery time.Duration
	Log        *zap.Logger
}

func (c *LeaseConfig) validate() error {
	if c.Client == nil || c.Namespace == "" || c.Member == "" {
		return errors.New("cluster lease provider: Client, Namespace and Member are required")
	}
	if c.Duration <= 0 {
		c.Duration = 15 * time.Second
	}
	if c.RenewEvery <= 0 {
		c.RenewEvery = c.Duration / 5
	}
	if c.RenewEvery*4 > c.Duration {
		return fmt.Errorf("cluster lease provider: renew period %s must be at most a quarter of the membership timeout %s", c.RenewEvery, c.Duration)
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	return nil
}

// LeaseProvider is a protoactor cluster.ClusterProvider whose member list is
// the set of coordination.k8s.io Leases labelled with the cluster's name:
// each member renews its own Lease (holding its address and kinds) and lists
// the others', and hands the live ones to the engine's MemberList.
type LeaseProvider struct {
	cfg       LeaseConfig
	cluster   *cluster.Cluster
	self      *cluster.Member
	leaseName string
	cancel    context.CancelFunc
	done      chan struct{}
	lost      chan struct{}
	lostOnce  sync.Once
	fence     *time.Timer // closes lost when the Lease is about to expire

	mu        sync.Mutex
	renewedAt time.Time // local time the last successful renew was sent

	seen map[string]observation // by Lease name; only the list loop touches it
}

// observation is when this member last saw a Lease change, by its own
// clock: expiry never compares clocks of two machines.
type observation struct {
	holder, renew string
	at            time.Time
}

// NewLeaseProvider checks cfg and returns a provider to pass to
// cluster.Configure.
func NewLeaseProvider(cfg LeaseConfig) (*LeaseProvider, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &LeaseProvider{cfg: cfg, lost: make(chan struct{}), seen: map[string]observation{}}, nil
}

// StartMember writes this member's Lease once (failing if the API server
// refuses) and starts the renew loop and the list loop.
func (p *LeaseProvider) StartMember(c *cluster.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return fmt.Errorf("cluster lease provider: member address: %w", err)
	}
	p.cluster = c
	p.leaseName = c.Config.Name + "-" + p.cfg.Member
	p.self = &cluster.Member{Id: c.ActorSystem.ID, Host: host, Port: int32(port), Kinds: c.GetClusterKinds()}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	if err := p.renew(ctx); err != nil {
		cancel()
		close(p.done)
		return err
	}
	p.fence = time.AfterFunc(p.fenceAfter(), p.markLost)
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); p.every(ctx, p.renewOnce) }()
	go func() { defer loops.Done(); p.every(ctx, p.listOnce) }()
	go func() { loops.Wait(); close(p.done) }()
	return nil
}

// fenceAfter is how long from now this member may still act as an owner:
// until its last renew plus the membership timeout, less two renew periods
// for the supervisor to stop what it runs. The others wait at least the
// whole timeout after they saw that renew, which was sent after renewedAt.
func (p *LeaseProvider) fenceAfter() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Until(p.renewedAt.Add(p.cfg.Duration - 2*p.cfg.RenewEvery))
}

func (p *LeaseProvider) markLost() {
	p.lostOnce.Do(func() {
		p.cfg.Log.Error("cluster: this member could not renew its Lease in time; it owns nothing now and must restart to rejoin",
			zap.String("lease", p.cfg.Namespace+"/"+p.leaseName), zap.Duration("timeout", p.cfg.Duration))
		close(p.lost)
	})
}

// StartClient is refused: every ALUMIINI replica is a full member.
func (p *LeaseProvider) StartClient(*cluster.Cluster) error {
	return errors.New("cluster lease provider: client mode is not supported; start a member")
}

// Shutdown stops renewing. A graceful shutdown also deletes the Lease so
// that the others drop this member at once instead of after the timeout.
func (p *LeaseProvider) Shutdown(graceful bool) error {
	if p.cancel == nil {
		return nil
	}
	p.stopRenewing()
	p.markLost()
	if !graceful {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.cfg.Client.CoordinationV1().Leases(p.cfg.Namespace).Delete(ctx, p.leaseName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("cluster lease provider: delete Lease %s/%s: %w", p.cfg.Namespace, p.leaseName, err)
	}
	return nil
}

// stopRenewing ends the renew and list loops.
func (p *LeaseProvider) stopRenewing() {
	p.cancel()
	<-p.done
}

// Fresh reports whether this member may act as an owner: its Lease was
// renewed recently enough that no other member can have dropped it.
func (p *LeaseProvider) Fresh() bool {
	select {
	case <-p.lost:
		return false
	default:
		return true
	}
}

// Lost is closed once this member stops being Fresh: its Lease is about to
// expire, or the provider shut down. The others drop it and their engines
// block its id for good, so it cannot rejoin: the process should stop its
// repository actors and exit, and come back as a new member.
func (p *LeaseProvider) Lost() <-chan struct{} { return p.lost }

// every runs step now and then once per renew period until ctx ends or
// this member is lost. Renewing and listing run in loops of their own, so
// that a slow list never delays a renew.
func (p *LeaseProvider) every(ctx context.Context, step func(context.Context)) {
	t := time.NewTicker(p.cfg.RenewEvery)
	defer t.Stop()
	for {
		step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.lost:
			return
		case <-t.C:
		}
	}
}

func (p *LeaseProvider) renewOnce(ctx context.Context) {
	if err := p.renew(ctx); err != nil && ctx.Err() == nil {
		p.cfg.Log.Warn("cluster: renewing this member's Lease failed", zap.Error(err))
	}
}

func (p *LeaseProvider) listOnce(ctx context.Context) {
	members, err := p.list(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Log.Warn("cluster: listing member Leases failed; keeping the last member list", zap.Error(err))
		}
		return
	}
	p.cluster.MemberList.UpdateClusterTopology(members)
}

// renew creates or updates this member's Lease. A renew may take until
// this member would fence itself: it counts from when it started, and the
// others count from when they saw it written, which is later, so a slow
// API server costs nothing as long as a renew gets through before the
// fence. (Bounding it by the renew period instead made every member of a
// busy cluster fence itself: their Lease requests queue at the API server
// behind their own syncs.)
func (p *LeaseProvider) renew(parent context.Context) error {
	start := time.Now()
	deadline := start.Add(p.cfg.Duration - 2*p.cfg.RenewEvery) // the first renew, in StartMember
	if p.fence != nil {
		deadline = start.Add(p.fenceAfter())
	}
	ctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	leases := p.cfg.Client.CoordinationV1().Leases(p.cfg.Namespace)
	lease, err := leases.Get(ctx, p.leaseName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: p.leaseName, Namespace: p.cfg.Namespace}}
		p.fill(lease, start)
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	case err == nil:
		p.fill(lease, start)
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("renew Lease %s/%s: %w", p.cfg.Namespace, p.leaseName, err)
	}
	p.mu.Lock()
	p.renewedAt = start
	p.mu.Unlock()
	if p.fence != nil {
		p.fence.Reset(p.fenceAfter())
	}
	return nil
}

func (p *LeaseProvider) fill(l *coordinationv1.Lease, now time.Time) {
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Labels[labelCluster] = p.cluster.Config.Name
	l.Annotations[annotAddress] = p.self.Address()
	l.Annotations[annotKinds] = strings.Join(p.self.Kinds, ",")
	l.Spec.HolderIdentity = ptr.To(p.self.Id)
	l.Spec.LeaseDurationSeconds = ptr.To(int32((p.cfg.Duration + time.Second - 1) / time.Second))
	l.Spec.RenewTime = &metav1.MicroTime{Time: now}
}

// list returns the members whose Lease this member saw renewed within the
// membership timeout, and deletes Leases long dead.
//
// A list is bounded by the renew period: a Lease counts as seen when the
// list returns, so a list answered late could show a member as not renewed
// for the timeout when it renewed meanwhile. Bounded by R, what it shows is
// at most R old, less than the 2R margin of the member's own fence.
func (p *LeaseProvider) list(parent context.Context) (cluster.Members, error) {
	ctx, cancel := context.WithTimeout(parent, p.cfg.RenewEvery)
	defer cancel()
	sel := labelCluster + "=" + p.cluster.Config.Name
	leases, err := p.cfg.Client.CoordinationV1().Leases(p.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list Leases %s in %s: %w", sel, p.cfg.Namespace, err)
	}
	now := time.Now()
	members := cluster.Members{p.self}
	listed := make(map[string]bool, len(leases.Items))
	for i := range leases.Items {
		l := &leases.Items[i]
		listed[l.Name] = true
		if l.Name == p.leaseName {
			continue
		}
		age := now.Sub(p.observe(l, now))
		if age < p.cfg.Duration {
			if m, err := leaseMember(l); err == nil {
				members = append(members, m)
			} else {
				p.cfg.Log.Warn("cluster: ignoring a malformed member Lease", zap.String("lease", l.Name), zap.Error(err))
			}
		} else if age > gcAfterLeases*p.cfg.Duration {
			p.collect(ctx, l)
		}
	}
	for name := range p.seen {
		if !listed[name] {
			delete(p.seen, name)
		}
	}
	return members, nil
}

// observe records a change of l and returns when this member last saw l
// change. A Lease seen for the first time counts from its own renew time
// when that is earlier, so a Lease left by a crashed member is not revived.
func (p *LeaseProvider) observe(l *coordinationv1.Lease, now time.Time) time.Time {
	holder, renew := ptr.Deref(l.Spec.HolderIdentity, ""), ""
	if l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
	}
	o, ok := p.seen[l.Name]
	if ok && o.holder == holder && o.renew == renew {
		return o.at
	}
	at := now
	if !ok && l.Spec.RenewTime != nil && l.Spec.RenewTime.Before(&metav1.MicroTime{Time: now}) {
		at = l.Spec.RenewTime.Time
	}
	p.seen[l.Name] = observation{holder: holder, renew: renew, at: at}
	return at
}

// collect deletes a dead member's Lease, only if nobody renewed it since.
func (p *LeaseProvider) collect(ctx context.Context, l *coordinationv1.Lease) {
	pre := metav1.Preconditions{ResourceVersion: ptr.To(l.ResourceVersion)}
	err := p.cfg.Client.CoordinationV1().Leases(l.Namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &pre})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		p.cfg.Log.Warn("cluster: deleting a dead member's Lease failed", zap.String("lease", l.Name), zap.Error(err))
	}
}

// leaseMember reads the member a Lease describes.
func leaseMember(l *coordinationv1.Lease) (*cluster.Member, error) {
	id := ptr.Deref(l.Spec.HolderIdentity, "")
	host, portStr, err := net.SplitHostPort(l.Annotations[annotAddress])
	if err != nil || id == "" {
		return nil, fmt.Errorf("lease %s: holder %q, address %q: %v", l.Name, id, l.Annotations[annotAddress], err)
	}
	port, err := strconv.ParseInt(portStr, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("lease %s: port %q: %w", l.Name, portStr, err)
	}
	var kinds []string
	if k := l.Annotations[annotKinds]; k != "" {
		kinds = strings.Split(k, ",")
	}
	return &cluster.Member{Id: id, Host: host, Port: int32(port), Kinds: kinds}, nil
}
