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
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
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
}

func newController(c config, getenv func(string) string, log *zap.Logger) (*controller, error) {
	restCfg, err := kubeconfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	restCfg.UserAgent = "alumiini/" + version
	restCfg.QPS, restCfg.Burst = 50, 100
	ctrl := &controller{cfg: c, log: log, rest: restCfg, registry: prometheus.NewRegistry(), repos: newRepoIndex(log)}
	if ctrl.kube, err = kubernetes.NewForConfig(restCfg); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if ctrl.dyn, err = dynamic.NewForConfig(restCfg); err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	ctrl.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctrl.metrics = metrics.New(ctrl.registry)
	source := "/alumiini"
	if pod := getenv("POD_NAME"); pod != "" {
		source += "/" + c.LeaseNamespace + "/" + pod
	}
	ctrl.emitter, err = cdevents.New(cdevents.Config{Sink: c.CDEventsSink, Source: source, Metrics: ctrl.registry, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--cdevents-sink: %w", err)
	}
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
	webhookSecret, err := readSecretFile(c.WebhookSecretFile)
	if err != nil {
		return err
	}
	informer := ctrl.informers.ForResource(v1alpha1.GitRepositoryResource).Informer()
	if _, err := informer.AddEventHandler(ctrl.repos.handler()); err != nil {
		return fmt.Errorf("watch GitRepositories: %w", err)
	}
	ctrl.sink.set(handoffSink{dyn: ctrl.dyn, log: log})
	hook := webhook.NewHandler(webhook.Config{
		Secret: webhookSecret, AllowInsecure: c.WebhookInsecure, Metrics: ctrl.registry, Logger: log,
	}, ctrl.repos, ctrl.secrets, &ctrl.sink)

	webhookSrv, err := listen("webhook", c.WebhookAddr, hook)
	if err != nil {
		return err
	}
	metricsSrv, err := listen("metrics", c.MetricsAddr, metricsHandler(ctrl.registry))
	if err != nil {
		return err
	}
	healthSrv, err := listen("health", c.HealthAddr, ctrl.health.handler())
	if err != nil {
		return err
	}
	for _, s := range []*server{webhookSrv, metricsSrv, healthSrv} {
		go s.serve(log)
	}

	stopInformers := make(chan struct{})
	ctrl.informers.Start(stopInformers)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		close(stopInformers)
		return fmt.Errorf("GitRepository informer did not sync: %w", ctx.Err())
	}
	ctrl.health.ready.Store(true)
	log.Info("started", zap.String("version", version), zap.String("watch_namespace", c.WatchNamespace),
		zap.Bool("leader_elect", c.LeaderElect))

	if c.LeaderElect {
		err = runLeaderElection(ctx, c, ctrl.kube, log, func(leadCtx context.Context) { ctrl.lead(leadCtx, informer) })
	} else {
		ctrl.lead(ctx, informer)
	}

	// Shutdown: refuse new webhooks first, then let syncs finish (lead
	// returned after they did), then stop the rest.
	ctrl.health.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	webhookSrv.shutdown(shutdownCtx)
	close(stopInformers)
	ctrl.informers.Shutdown()
	if err := ctrl.emitter.Close(shutdownCtx); err != nil {
		log.Warn("CDEvents not all delivered", zap.Error(err))
	}
	metricsSrv.shutdown(shutdownCtx)
	healthSrv.shutdown(shutdownCtx)
	log.Info("stopped")
	return err
}

// lead runs the actor system until ctx ends: while it runs, this replica
// syncs and its webhooks go straight to the repository actors.
func (ctrl *controller) lead(ctx context.Context, informer cache.SharedIndexInformer) {
	applier, err := k8s.NewApplier(ctrl.rest)
	if err != nil {
		ctrl.log.Error("cannot build the applier", zap.Error(err))
		return
	}
	recorder, stopRecorder := newRecorder(ctrl.kube)
	defer stopRecorder()
	fetcher := gitsrc.NewFetcher(ctrl.cfg.CacheDir)
	p := &pipeline.Pipeline{
		Fetcher: fetcher, Applier: applier, Status: k8s.NewStatusWriter(ctrl.dyn), Secrets: ctrl.secrets,
		Recorder: recorder, Events: ctrl.emitter, Metrics: ctrl.metrics, Logger: ctrl.log, WebhookRetries: 3,
		Slots: make(chan struct{}, ctrl.cfg.MaxConcurrentSyncs),
	}
	sys := actors.NewSystem(actors.Config{
		Syncer: p,
		Logger: ctrl.log,
		Hooks:  metricsHooks{ctrl.metrics},
		OnRemove: func(key string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := p.Cache.Evict(ctx, key); err != nil {
				ctrl.log.Warn("evict cache", zap.String("repository", key), zap.Error(err))
			}
			if err := fetcher.Remove(key); err != nil {
				ctrl.log.Warn("remove checkout", zap.String("repository", key), zap.Error(err))
			}
		},
	})
	p.Cache = alucache.Start(sys.Root(), 5*time.Second)
	if err := sys.WatchInformer(ctx, informer); err != nil {
		ctrl.log.Error("watch GitRepositories", zap.Error(err))
	}
	ctrl.sink.set(sys)
	<-ctx.Done()
	// Hand webhooks back to the Lease holder before the actors stop.
	ctrl.sink.set(handoffSink{dyn: ctrl.dyn, log: ctrl.log})
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ctrl.cfg.ShutdownTimeout)
	defer cancel()
	sys.Shutdown(shutdownCtx)
	_ = p.Cache.Stop()
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
