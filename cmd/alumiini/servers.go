package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/false-systems/alumiini/actors"
	alucluster "github.com/false-systems/alumiini/actors/cluster"
	"github.com/false-systems/alumiini/actors/view"
)

// server is one of the process's HTTP listeners.
type server struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// listen binds addr now, so a port clash is reported at startup, before
// anything else runs. An empty addr or "0" disables the server.
func listen(name, addr string, h http.Handler) (*server, error) {
	if addr == "" || addr == "0" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s server on %s: %w", name, addr, err)
	}
	return &server{name: name, ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}}, nil
}

func (s *server) serve(log *zap.Logger) {
	if s == nil {
		return
	}
	log.Info("serving", zap.String("server", s.name), zap.String("addr", s.ln.Addr().String()))
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("server stopped", zap.String("server", s.name), zap.Error(err))
	}
}

func (s *server) shutdown(ctx context.Context) {
	if s != nil {
		_ = s.srv.Shutdown(ctx)
	}
}

// health answers /healthz (the process runs) and /readyz (informers synced
// and not shutting down).
type health struct{ ready atomic.Bool }

func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !h.ready.Load() {
			http.Error(w, "not ready: caches syncing or shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// metricsHandler serves /metrics, the read-only actor view and, with
// profiling, Go's pprof profiles: off by default because a profile shows
// internals an operator may not want exposed on the metrics port.
func metricsHandler(reg *prometheus.Registry, view *actorView, profiling bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	view.handler(mux)
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// actorView serves the read-only /debug endpoints on the metrics port:
// what each repository actor is doing (the seed's list_workers and
// get_status), for `kubectl alumiini status`. With leader election it
// reaches the actors only while this replica leads; a standby answers 503.
// In cluster mode a question about one repository goes to its owner, so
// that every member answers it the same; the list stays this member's.
// docs/cli.md explains why this is an endpoint and not a status field.
type actorView struct {
	mu       sync.RWMutex
	sys      *actors.System
	cluster  bool             // --cluster: no leader, every member runs its share
	node     *alucluster.Node // cluster mode, once this member has joined
	restarts map[string]int   // per live repository actor: forgotten when it stops for good
}

func newActorView(cluster bool) *actorView {
	return &actorView{cluster: cluster, restarts: map[string]int{}}
}

func (v *actorView) set(sys *actors.System) {
	v.mu.Lock()
	v.sys = sys
	v.mu.Unlock()
}

// setNode turns cluster mode on: questions about one repository this
// member does not own go to its owner.
func (v *actorView) setNode(node *alucluster.Node) {
	v.mu.Lock()
	v.node = node
	v.mu.Unlock()
}

func (v *actorView) restarted(key string) {
	v.mu.Lock()
	v.restarts[key]++
	v.mu.Unlock()
}

// stopped forgets a repository whose actor stopped for good (deleted, or
// this replica stopped leading), so that the map holds live actors only.
func (v *actorView) stopped(key string) {
	v.mu.Lock()
	delete(v.restarts, key)
	v.mu.Unlock()
}

// ownerTimeout bounds asking the owner, below the endpoints' 5s, so that
// an unreachable owner is reported by name rather than as a timeout.
const ownerTimeout = 4 * time.Second

// view is the state of repository key's actor: this replica's, or in
// cluster mode its owner's (an error wrapping actors.ErrNotFound when the
// owner runs no such actor).
func (v *actorView) view(ctx context.Context, key string) (view.Repository, error) {
	v.mu.RLock()
	node := v.node
	v.mu.RUnlock()
	if node == nil || node.Owns(key) {
		return v.local(ctx, key)
	}
	ctx, cancel := context.WithTimeout(ctx, ownerTimeout)
	defer cancel()
	return node.Status(ctx, key)
}

// local is the state of this replica's actor for key. It is also what an
// owner answers for the others (alucluster.NewHandler).
func (v *actorView) local(ctx context.Context, key string) (view.Repository, error) {
	v.mu.RLock()
	sys, restarts := v.sys, v.restarts[key]
	v.mu.RUnlock()
	if sys == nil {
		return view.Repository{}, v.noActors()
	}
	st, err := sys.Status(ctx, key)
	if err != nil {
		return view.Repository{}, err
	}
	return st.View(restarts), nil
}

var (
	errNotLeading = errors.New("this replica does not lead: ask the leader (see the Lease)")
	errNoActors   = errors.New("this cluster member runs no actors yet: starting, or leaving the cluster")
)

// noActors is the error while this replica runs no actor system.
func (v *actorView) noActors() error {
	if v.cluster {
		return errNoActors
	}
	return errNotLeading
}

// list shows this replica's own actors: in cluster mode, the repositories
// this member owns (docs/cluster.md).
func (v *actorView) list(w http.ResponseWriter, r *http.Request) {
	v.mu.RLock()
	sys := v.sys
	v.mu.RUnlock()
	if sys == nil {
		http.Error(w, v.noActors().Error(), http.StatusServiceUnavailable)
		return
	}
	out := []view.Repository{}
	for _, key := range sys.Keys() {
		rv, err := v.local(r.Context(), key)
		if errors.Is(err, actors.ErrNotFound) {
			continue // removed since Keys
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		out = append(out, rv)
	}
	writeJSON(w, out)
}

func (v *actorView) one(w http.ResponseWriter, r *http.Request) {
	rv, err := v.view(r.Context(), r.PathValue("namespace")+"/"+r.PathValue("name"))
	switch {
	case errors.Is(err, actors.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		writeJSON(w, rv)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// handler also serves /debug/version, which `kubectl alumiini check`
// compares with its own.
func (v *actorView) handler(mux *http.ServeMux) {
	const timeout = 5 * time.Second
	timed := func(h http.HandlerFunc) http.Handler {
		return http.TimeoutHandler(h, timeout, "actor status timed out\n")
	}
	mux.Handle("GET /debug/repositories", timed(v.list))
	mux.Handle("GET /debug/repositories/{namespace}/{name}", timed(v.one))
	mux.HandleFunc("GET /debug/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{"version": version})
	})
}
