package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// config is every flag of design.md §3, after ALUMIINI_* environment
// variables and defaults were applied.
type config struct {
	Kubeconfig          string
	WatchNamespace      string
	WebhookAddr         string
	MetricsAddr         string
	HealthAddr          string
	WebhookSecretFile   string
	WebhookInsecure     bool
	CDEventsSink        string
	LeaderElect         bool
	Cluster             bool
	ClusterName         string
	ClusterAddr         string
	ClusterTimeout      time.Duration
	LeaseNamespace      string
	LeaseDuration       time.Duration
	RenewDeadline       time.Duration
	RetryPeriod         time.Duration
	ShutdownTimeout     time.Duration
	MaxConcurrentSyncs  int
	KubeAPIQPS          float64
	KubeAPIBurst        int
	AllowFileURLs       bool
	WebhookMaxBodyBytes int64
	CacheDir            string
	DefaultSA           string
	LogLevel            string
	LogFormat           string
	Version             bool
	Profiling           bool
}

// envName is the environment twin of a flag: --cache-dir → ALUMIINI_CACHE_DIR.
func envName(flagName string) string {
	return "ALUMIINI_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags, falling back to their ALUMIINI_* variables; a
// flag given on the command line wins over its variable.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("alumiini", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.serverFlags(fs)
	c.syncFlags(fs)
	if err := fromEnv(fs, getenv); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: alumiini takes flags only (see --help)", fs.Arg(0))
	}
	c.defaults(getenv)
	return c, c.validate()
}

// serverFlags are the flags of the process: its API access, servers,
// events and modes of running.
func (c *config) serverFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&c.WatchNamespace, "watch-namespace", "", "only watch GitRepositories in this namespace (default: all)")
	fs.StringVar(&c.WebhookAddr, "webhook-addr", ":8080", "address of the webhook HTTP server")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":9090", "address of the Prometheus /metrics server")
	fs.StringVar(&c.HealthAddr, "health-addr", ":8081", "address of the /healthz and /readyz server")
	fs.StringVar(&c.WebhookSecretFile, "webhook-secret-file", "", "file holding the controller-wide webhook secret")
	fs.BoolVar(&c.WebhookInsecure, "webhook-insecure", false, "accept unsigned webhooks when no secret applies (development only)")
	fs.StringVar(&c.CDEventsSink, "cdevents-sink", "", "URL that receives CDEvents as CloudEvents over HTTP")
	fs.BoolVar(&c.LeaderElect, "leader-elect", false, "elect a leader through a coordination.k8s.io Lease")
	fs.BoolVar(&c.Cluster, "cluster", false, "cluster mode: every replica is active and owns a share of the GitRepositories (docs/cluster.md); excludes --leader-elect")
	fs.StringVar(&c.ClusterName, "cluster-name", "alumiini", "cluster mode: replicas with the same name form one cluster (the label of their member Leases)")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", ":4020", "cluster mode: listen address for member traffic; with no host, $POD_IP is what the others dial")
	fs.DurationVar(&c.ClusterTimeout, "cluster-member-timeout", 15*time.Second, "cluster mode: a member whose Lease is not renewed for this long is dropped and its repositories move")
}

// syncFlags are the flags of leadership, shutdown, syncs and logs.
func (c *config) syncFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.LeaseNamespace, "lease-namespace", "", "namespace of the leader Lease (default: the pod's namespace, else alumiini-system)")
	fs.DurationVar(&c.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a standby waits before taking over a Lease that is not renewed")
	fs.DurationVar(&c.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader retries renewing before giving up leadership")
	fs.DurationVar(&c.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "interval between leader election attempts")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "grace period of a shutdown, from the signal on: running syncs finish, CDEvents drain, servers stop")
	fs.BoolVar(&c.AllowFileURLs, "allow-file-urls", false, "accept file:// repository URLs, which read the controller's own disk (local development only)")
	fs.Int64Var(&c.WebhookMaxBodyBytes, "webhook-max-body-bytes", 1<<20, "largest webhook request body accepted; larger ones get 413")
	fs.IntVar(&c.MaxConcurrentSyncs, "max-concurrent-syncs", 16, "how many repositories sync at once; the others wait their turn")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", -1, "client-side limit of Kubernetes API requests per second; negative: none (the API server's priority and fairness, and --max-concurrent-syncs, bound the load)")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", 400, "burst of --kube-api-qps, when it is positive")
	fs.StringVar(&c.DefaultSA, "default-service-account", "", "ServiceAccount, in each GitRepository's namespace, to impersonate for GitRepositories that set no spec.serviceAccountName (lockdown mode; default: the controller's own rights)")
	fs.StringVar(&c.CacheDir, "cache-dir", filepath.Join(os.TempDir(), "alumiini"), "directory for git checkouts")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "", "log format: console or json (default: json in-cluster, console otherwise)")
	fs.BoolVar(&c.Profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on the metrics address (for benchmarks and diagnosis)")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
}

// fromEnv sets every flag whose ALUMIINI_* variable is set; the command
// line, parsed afterwards, wins.
func fromEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = errors.Join(envErr, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
		}
	})
	return envErr
}

// defaults fills the values whose default depends on where it runs.
func (c *config) defaults(getenv func(string) string) {
	if c.LogFormat == "" {
		c.LogFormat = "console"
		if getenv("KUBERNETES_SERVICE_HOST") != "" {
			c.LogFormat = "json"
		}
	}
	if c.LeaseNamespace == "" {
		c.LeaseNamespace = getenv("POD_NAMESPACE")
		if c.LeaseNamespace == "" {
			c.LeaseNamespace = "alumiini-system"
		}
	}
}

// validate checks values the flag package cannot, naming the flag at fault.
func (c config) validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{
		{"webhook-addr", c.WebhookAddr}, {"metrics-addr", c.MetricsAddr}, {"health-addr", c.HealthAddr},
	} {
		if a.addr == "" || a.addr == "0" {
			continue // disabled
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: want host:port such as :8080 (%v)", a.flag, a.addr, err))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "console", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: want console or json", c.LogFormat))
	}
	if c.CDEventsSink != "" {
		u, err := url.Parse(c.CDEventsSink)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--cdevents-sink %q: want an http:// or https:// URL", c.CDEventsSink))
		}
	}
	if c.LeaderElect && !(c.RetryPeriod > 0 && c.RetryPeriod < c.RenewDeadline && c.RenewDeadline < c.LeaseDuration) {
		errs = append(errs, fmt.Errorf("leader election timings: want 0 < retry-period (%v) < renew-deadline (%v) < lease-duration (%v)",
			c.RetryPeriod, c.RenewDeadline, c.LeaseDuration))
	}
	errs = append(errs, c.validateCluster()...)
	if c.WebhookMaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("--webhook-max-body-bytes %d: want at least 1024", c.WebhookMaxBodyBytes))
	}
	if c.MaxConcurrentSyncs < 1 {
		errs = append(errs, fmt.Errorf("--max-concurrent-syncs %d: want at least 1", c.MaxConcurrentSyncs))
	}
	if bad := validation.IsDNS1123Subdomain(c.DefaultSA); c.DefaultSA != "" && len(bad) > 0 {
		errs = append(errs, fmt.Errorf("--default-service-account %q: not a valid ServiceAccount name: %s", c.DefaultSA, strings.Join(bad, "; ")))
	}
	if c.CacheDir == "" {
		errs = append(errs, errors.New("--cache-dir is empty: give a writable directory for git checkouts"))
	}
	return errors.Join(errs...)
}

func (c config) validateCluster() []error {
	if !c.Cluster {
		return nil
	}
	var errs []error
	if c.LeaderElect {
		errs = append(errs, errors.New("--cluster and --leader-elect exclude each other: in cluster mode every replica is active"))
	}
	if _, _, err := net.SplitHostPort(c.ClusterAddr); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-addr %q: want host:port such as :4020 (%v)", c.ClusterAddr, err))
	}
	if c.ClusterTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--cluster-member-timeout %v: want at least 1s", c.ClusterTimeout))
	}
	return errs
}
