package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
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

// metricsHandler serves /metrics and, with profiling, Go's pprof profiles:
// off by default because a profile shows internals an operator may not
// want exposed on the metrics port.
func metricsHandler(reg *prometheus.Registry, profiling bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
