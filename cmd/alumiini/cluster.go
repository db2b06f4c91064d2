package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/false-systems/alumiini/actors"
	alucluster "github.com/false-systems/alumiini/actors/cluster"
)

// runCluster runs lead as a member of the cluster (--cluster): the actors
// run only the repositories this member owns. It returns an error when the
// membership is lost, so that the process restarts and rejoins as a new
// member (the engine never readmits a dropped one).
func (ctrl *controller) runCluster(ctx context.Context, lead func(ctx, fence context.Context) error) error {
	node, err := ctrl.startNode()
	if err != nil {
		return err
	}
	// Leave (deleting the Lease) only after lead has stopped the actors.
	defer node.Stop(true)
	ctrl.node = node
	ctrl.view.setNode(node)
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	fence, cancelFence := context.WithCancel(context.Background())
	defer cancelFence()
	go func() {
		select {
		case <-node.Lost():
			cancelFence() // others may own our repositories soon: cancel syncs now
			cancel()
		case <-leadCtx.Done():
		}
	}()
	err = lead(leadCtx, fence)
	ctrl.local.set(handoffSink{dyn: ctrl.dyn}) // the actors have stopped
	select {
	case <-node.Lost():
		if ctx.Err() == nil {
			return errors.Join(err, errors.New("cluster: this member's Lease could not be renewed in time and it left the cluster; restart to rejoin"))
		}
	default:
	}
	return err
}

// startNode joins the cluster on its own actor system.
func (ctrl *controller) startNode() (*alucluster.Node, error) {
	c := ctrl.cfg
	host, portStr, err := net.SplitHostPort(c.ClusterAddr)
	if err != nil {
		return nil, fmt.Errorf("--cluster-addr %q: %w", c.ClusterAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--cluster-addr %q: port: %w", c.ClusterAddr, err)
	}
	var advertised string
	if host == "" || net.ParseIP(host).IsUnspecified() {
		podIP := ctrl.getenv("POD_IP")
		if podIP == "" || port == 0 {
			return nil, fmt.Errorf("--cluster-addr %q listens on every interface: set POD_IP (the address the other members dial) and a fixed port, or give a host", c.ClusterAddr)
		}
		advertised = net.JoinHostPort(podIP, portStr)
	}
	member := ctrl.getenv("POD_NAME")
	if member == "" {
		if member, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("cluster member name: set POD_NAME: %w", err)
		}
	}
	log := ctrl.log.Named("cluster")
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(actors.NewSlogHandler(log.Named("protoactor")))
	}))
	ctrl.local.set(handoffSink{dyn: ctrl.dyn}) // until this member's actors run
	node, err := alucluster.Start(system, alucluster.Config{
		Name: c.ClusterName, Host: host, Port: port, AdvertisedHost: advertised,
		Handler: alucluster.NewHandler(&ctrl.local, ctrl.view.local),
		Lease: alucluster.LeaseConfig{Client: ctrl.kube, Namespace: c.LeaseNamespace, Member: member,
			Duration: c.ClusterTimeout, Log: log},
	})
	if err != nil {
		return nil, err
	}
	log.Info("joined the cluster", zap.String("cluster", c.ClusterName), zap.String("address", node.Address()), zap.String("member", member))
	return node, nil
}

// followOwnership starts and stops repository actors as ownership moves.
func (ctrl *controller) followOwnership(ctx context.Context, sys *actors.System) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ctrl.node.Changed():
			sys.Reconsider()
		}
	}
}

// owns is the actors' ownership filter: nil (everything) outside cluster mode.
func (ctrl *controller) owns() func(string) bool {
	if ctrl.node == nil {
		return nil
	}
	return ctrl.node.Owns
}

// setSink points webhooks at the running actors: directly, or in cluster
// mode through the owner (this member's actors when it owns the repository).
func (ctrl *controller) setSink(ctx context.Context, sys *actors.System) {
	if ctrl.node == nil {
		ctrl.sink.set(sys)
		return
	}
	ctrl.local.set(sys)
	ctrl.sink.set(&alucluster.Sink{Node: ctrl.node, Local: sys, Fallback: handoffSink{dyn: ctrl.dyn}, Log: ctrl.log.Named("cluster")})
	go ctrl.followOwnership(ctx, sys)
	sys.Reconsider() // ownership may have settled while the watch started
}
