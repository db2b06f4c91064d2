// Command alumiini is the ALUMIINI controller: it watches GitRepositories
// and keeps the cluster equal to the manifests in git. This file wires the
// packages together: flags, clients, the actor system and its sync
// pipeline, the webhook, metrics and health servers, leader election and
// graceful shutdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	alucluster "github.com/false-systems/alumiini/actors/cluster"
	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/actors/pipeline"
	alucache "github.com/false-systems/alumiini/cache"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/webhook"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "alumiini:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Version {
		fmt.Fprintln(stdout, "alumiini", version)
		return nil
	}
	log, err := newLogger(c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctrl, err := newController(c, getenv, log)
	if err != nil {
		return err
	}
	return ctrl.run(ctx)
}

// controller is the wired process.
type controller struct {
	cfg       config
	log       *zap.Logger
	rest      *rest.Config
	kube      kubernetes.Interface
	dyn       dynamic.Interface
	registry  *prometheus.Registry
	metrics   *metrics.Metrics
	emitter   *cdevents.Emitter
	secrets   *k8s.Secrets
	repos     *repoIndex
	informers dynamicinformer.DynamicSharedInformerFactory
	health    health
	sink      switchSink
	local     switchSink // in cluster mode: this member's own actors
	node      *alucluster.Node
	getenv    func(string) string
	view      *actorView
	grace     context.Context // ends the shutdown grace period after the signal
	stopping  func() bool     // the process was asked to stop
}

func newController(c config, getenv func(string) string, log *zap.Logger) (*controller, error) {
	restCfg, err := kubeconfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	restCfg.UserAgent = "alumiini/" + version
	restCfg.QPS, restCfg.Burst = float32(c.KubeAPIQPS), c.KubeAPIBurst
	if restCfg.QPS == 0 {
		restCfg.QPS = -1 // zero would mean client-go's default of 5
	}
	ctrl := &controller{cfg: c, log: log, rest: restCfg, registry: prometheus.NewRegistry(), repos: newRepoIndex(log), view: newActorView(c.Cluster), getenv: getenv}
	if ctrl.kube, err = kubernetes.NewForConfig(restCfg); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if ctrl.dyn, err = dynamic.NewForConfig(restCfg); err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	// go_gc_heap_live_bytes beside the memstats: the heap's live objects,
	// which its in-use figure can exceed by far (half-empty spans).
	live := collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}
	ctrl.registry.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(live)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctrl.metrics = metrics.New(ctrl.registry)
	source := "/alumiini"
	if pod := getenv("POD_NAME"); pod != "" {
		source += "/" + c.LeaseNamespace + "/" + pod
	}
	ctrl.emitter, err = cdevents.New(cdevents.Config{Sink: c.CDEventsSink, Source: source, Metrics: ctrl.registry, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--cdevents-sink: %w", err)
	}
	// Webhook secrets are read again after a minute, so a rotated one takes
	// effect quickly.
	ctrl.secrets = k8s.NewSecrets(ctrl.kube, time.Minute)
	ctrl.informers = dynamicinformer.NewFilteredDynamicSharedInformerFactory(ctrl.dyn, 0, c.WatchNamespace, nil)
	return ctrl, nil
}

// kubeconfig resolves --kubeconfig, then in-cluster, then $KUBECONFIG and
// ~/.kube/config.
func kubeconfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no cluster configured (not in a pod, no $KUBECONFIG, no ~/.kube/config): %w", err)
	}
	return cfg, nil
}

func (ctrl *controller) run(ctx context.Context) error {
	c, log := ctrl.cfg, ctrl.log
	informer, err := ctrl.watchRepositories()
	if err != nil {
		return err
	}
	srv, err := ctrl.listen()
	if err != nil {
		return err
	}
	for _, s := range []*server{srv.webhook, srv.metrics, srv.health} {
		go s.serve(log)
	}

	stopInformers := make(chan struct{})
	defer ctrl.informers.Shutdown()
	defer close(stopInformers)
	ctrl.informers.Start(stopInformers)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		// Only a signal ends the wait: a clean stop.
		log.Info("stopped before the GitRepository informer synced")
		return nil
	}
	if c.LeaderElect {
		// A standby serves webhooks too, by handing them to the leader.
		ctrl.health.ready.Store(true)
	}
	log.Info("started", zap.String("version", version), zap.String("watch_namespace", c.WatchNamespace),
		zap.Bool("leader_elect", c.LeaderElect), zap.Bool("cluster", c.Cluster))

	// Every shutdown step shares one grace period from the signal on.
	ctrl.stopping = func() bool { return ctx.Err() != nil }
	var cancelGrace context.CancelFunc
	ctrl.grace, cancelGrace = graceContext(ctx, c.ShutdownTimeout)
	defer cancelGrace()
	// The first step of a shutdown: refuse new webhooks.
	stopWebhooks := context.AfterFunc(ctx, func() {
		ctrl.health.ready.Store(false)
		srv.webhook.shutdown(ctrl.grace)
	})
	defer stopWebhooks()

	lead := func(ctx, fence context.Context) error { return ctrl.lead(ctx, fence, informer) }
	switch {
	case c.LeaderElect:
		err = runLeaderElection(ctx, c, ctrl.kube, log, lead)
	case c.Cluster:
		err = ctrl.runCluster(ctx, lead)
	default:
		err = lead(ctx, context.Background())
	}
	ctrl.stopServers(ctx, srv)
	if err != nil {
		log.Error("stopped on error", zap.Error(err))
		return err
	}
	log.Info("stopped cleanly")
	return nil
}

// watchRepositories registers the GitRepository informer's transform and
// handler; the informer starts with the others.
func (ctrl *controller) watchRepositories() (cache.SharedIndexInformer, error) {
	informer := ctrl.informers.ForResource(v1alpha1.GitRepositoryResource).Informer()
	if err := informer.SetTransform(slimRepository); err != nil {
		return nil, fmt.Errorf("watch GitRepositories: %w", err)
	}
	if _, err := informer.AddEventHandler(ctrl.repos.handler()); err != nil {
		return nil, fmt.Errorf("watch GitRepositories: %w", err)
	}
	return informer, nil
}

// processServers are the process's HTTP listeners.
type processServers struct{ webhook, metrics, health *server }

// listen binds the webhook, metrics and health addresses now, so a port
// clash is reported before anything runs.
func (ctrl *controller) listen() (processServers, error) {
	c := ctrl.cfg
	webhookSecret, err := readSecretFile(c.WebhookSecretFile)
	if err != nil {
		return processServers{}, err
	}
	ctrl.sink.set(handoffSink{dyn: ctrl.dyn})
	hook := webhook.NewHandler(webhook.Config{
		Secret: webhookSecret, AllowInsecure: c.WebhookInsecure, MaxBodyBytes: c.WebhookMaxBodyBytes,
		Metrics: ctrl.registry, Logger: ctrl.log,
	}, ctrl.repos, ctrl.secrets, &ctrl.sink)
	var srv processServers
	if srv.webhook, err = listen("webhook", c.WebhookAddr, hook); err != nil {
		return srv, err
	}
	if srv.metrics, err = listen("metrics", c.MetricsAddr, metricsHandler(ctrl.registry, ctrl.view, c.Profiling)); err != nil {
		return srv, err
	}
	srv.health, err = listen("health", c.HealthAddr, ctrl.health.handler())
	return srv, err
}

// stopServers runs once the actors have stopped (lead returned). Without a
// signal (an error ended leading) the grace period starts now.
func (ctrl *controller) stopServers(ctx context.Context, srv processServers) {
	grace := ctrl.grace
	if ctx.Err() == nil {
		var cancel context.CancelFunc
		grace, cancel = context.WithTimeout(context.Background(), ctrl.cfg.ShutdownTimeout)
		defer cancel()
	}
	ctrl.health.ready.Store(false)
	srv.webhook.shutdown(grace)
	if err := ctrl.emitter.Close(grace); err != nil {
		ctrl.log.Warn("CDEvents not all delivered", zap.Error(err))
	}
	srv.metrics.shutdown(grace)
	srv.health.shutdown(grace)
}

// graceContext returns a context that ends grace after ctx ends.
func graceContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	g, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return g, func() { stop(); cancel() }
}

// lead runs the actor system until ctx ends: while it runs, this replica
// syncs and its webhooks go straight to the repository actors. It returns
// once the actors have stopped, or the grace period ran out.
func (ctrl *controller) lead(ctx, fence context.Context, informer cache.SharedIndexInformer) error {
	p, fetcher, stopRecorder, err := ctrl.newPipeline(fence)
	if err != nil {
		return err
	}
	defer stopRecorder()
	var hashes *alucache.Client
	sys := actors.NewSystem(actors.Config{
		Syncer:             p,
		Logger:             ctrl.log,
		Hooks:              metricsHooks{m: ctrl.metrics, view: ctrl.view},
		MaxConcurrentSyncs: ctrl.cfg.MaxConcurrentSyncs,
		OnRemove:           func(key string) { ctrl.forget(hashes, fetcher, key); p.Applier.Forget(key) },
		Owns:               ctrl.owns(),
	})
	hashes = alucache.Start(sys.Root(), 5*time.Second)
	p.Cache = hashes
	defer func() { _ = hashes.Stop() }()
	sys.WatchAPI(ctx, ctrl.probeAPI, time.Second, time.Second)
	defer func() {
		// On a signal, running syncs may finish within the grace period; when
		// the Lease was lost they are cancelled at once, as another replica
		// may already lead.
		stop := ctrl.grace
		if !ctrl.stopping() {
			cancelled, cancel := context.WithCancel(context.Background())
			cancel()
			stop = cancelled
		}
		sys.Shutdown(stop)
	}()
	if err := sys.WatchInformer(ctx, informer); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	ctrl.setSink(ctx, sys)
	// Without leader election, ready means webhooks reach the actors
	// directly, not through the requestedAt handoff meant for standbys.
	ctrl.health.ready.Store(!ctrl.stopping())
	ctrl.view.set(sys)
	defer ctrl.view.set(nil)
	<-ctx.Done()
	// Hand webhooks back to whoever holds the Lease before the actors stop.
	ctrl.sink.set(handoffSink{dyn: ctrl.dyn})
	return nil
}

// newPipeline builds the sync pipeline of one term of leading, and its git
// fetcher; stop ends its Event recorder.
func (ctrl *controller) newPipeline(fence context.Context) (p *pipeline.Pipeline, fetcher *gitsrc.Fetcher, stop func(), err error) {
	// The watches that spare quiet drift checks their lists end with this
	// term of leading.
	watches, stopWatches := context.WithCancel(fence)
	options := []k8s.ApplierOption{k8s.WithMoveWatch(watches, ctrl.log)}
	if sa := ctrl.cfg.DefaultSA; sa != "" {
		options = append(options, k8s.WithDefaultServiceAccount(sa))
	}
	applier, err := k8s.NewApplier(ctrl.rest, options...)
	if err != nil {
		stopWatches()
		return nil, nil, nil, fmt.Errorf("build the applier: %w", err)
	}
	recorder, stopRecorder := newRecorder(ctrl.kube)
	stop = func() { stopRecorder(); stopWatches() }
	fetcher = gitsrc.NewFetcher(ctrl.cfg.CacheDir)
	p = &pipeline.Pipeline{
		Source: fetcher, Applier: applier, Status: k8s.NewStatusWriter(ctrl.dyn),
		// Git credentials are kept longer so that quiet polls make no API
		// request; a failed fetch drops them at once (a rotated Secret).
		Secrets:  k8s.NewSecrets(ctrl.kube, 10*time.Minute),
		Recorder: recorder, Events: ctrl.emitter, Metrics: ctrl.metrics, Logger: ctrl.log,
		WebhookRetries: 3, AllowFileURLs: ctrl.cfg.AllowFileURLs, Fence: fence,
		// A quarter of the slots: enough that a first sync's Pending
		// writes keep ahead of its applies (two status requests per
		// new repository outside the slots, against some 25 inside),
		// few enough that thousands of them do not arrive together.
		StatusGate: semaphore.NewWeighted(int64(max(1, ctrl.cfg.MaxConcurrentSyncs/4))),
	}
	return p, fetcher, stop, nil
}

// forget evicts a removed repository's cache entry and deletes its
// checkout. It runs off the supervisor's mailbox (actors.Config.OnRemove).
func (ctrl *controller) forget(hashes *alucache.Client, fetcher *gitsrc.Fetcher, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hashes.Evict(ctx, key); err != nil {
		ctrl.log.Warn("evict cache", zap.String("repository", key), zap.Error(err))
	}
	if err := fetcher.Remove(key); err != nil {
		ctrl.log.Warn("remove checkout", zap.String("repository", key), zap.Error(err))
	}
}

// probeAPI asks the API server whether it is ready (GET /readyz).
func (ctrl *controller) probeAPI(ctx context.Context) error {
	return ctrl.kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
}

// readSecretFile reads --webhook-secret-file, trimming a trailing newline.
func readSecretFile(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("--webhook-secret-file %s is empty: put the shared secret in it", path)
	}
	return b, nil
}
