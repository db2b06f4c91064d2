package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// apiProxy forwards TCP connections to a target (the API server, or a git
// server), with faults: cut, it refuses new connections and drops open
// ones, as an outage looks from the controller (the test keeps its own
// connection); slow, it holds every chunk of response for a while;
// dropping, it cuts every connection after some bytes of response,
// mid-response; blackholed, it keeps every connection open and swallows
// what crosses it both ways, as a network partition looks.
type apiProxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
	delay        time.Duration // before each chunk of response
	dropAfter    int           // bytes of response a connection carries before it is cut; 0: no limit
	blackholed   bool
}

// blackhole starts swallowing every byte, both ways, on open and new
// connections. A swallowed connection is useless afterwards, as after a
// partition long enough for TCP to give up; the proxy stays blackholed
// until it is cut.
func (p *apiProxy) blackhole() {
	p.mu.Lock()
	p.blackholed = true
	p.mu.Unlock()
}

func (p *apiProxy) isBlackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackholed
}

// slow delays every chunk of response by d (0: no delay).
func (p *apiProxy) slow(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// dropping cuts every connection, open or new, once it has carried n bytes
// of response (0: never).
func (p *apiProxy) dropping(n int) {
	p.mu.Lock()
	p.dropAfter = n
	p.mu.Unlock()
}

func (p *apiProxy) faults() (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.dropAfter
}

func newAPIProxy(t *testing.T) *apiProxy {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return newTCPProxy(t, u.Host)
}

func newTCPProxy(t *testing.T, target string) *apiProxy {
	t.Helper()
	p := &apiProxy{addr: freeAddr(t), target: target}
	p.restore(t)
	t.Cleanup(p.cut)
	return p
}

func (p *apiProxy) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *apiProxy) forward(c net.Conn) {
	if p.isBlackholed() {
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, up)
	p.mu.Unlock()
	go func() { p.request(up, c); _ = up.Close() }()
	p.respond(c, up)
	_ = c.Close()
	_ = up.Close()
}

// request copies the client's bytes to the target, unless blackholed.
func (p *apiProxy) request(up, c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && !p.isBlackholed() {
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// respond copies the API server's responses to the client, with the
// faults in force at each chunk.
func (p *apiProxy) respond(c, up net.Conn) {
	buf := make([]byte, 16<<10)
	sent := 0
	for {
		n, err := up.Read(buf)
		if n > 0 && !p.isBlackholed() {
			delay, dropAfter := p.faults()
			testenv.Hold(delay) // the fault injected
			if dropAfter > 0 && sent+n > dropAfter {
				_, _ = c.Write(buf[:dropAfter-min(sent, dropAfter)]) // part of it, then the cut
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			sent += n
		}
		if err != nil {
			return
		}
	}
}

func (p *apiProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// kubeconfig is the test kubeconfig pointed at the proxy (the API server's
// certificate names 127.0.0.1, whatever the port).
func (p *apiProxy) kubeconfig(t *testing.T) string {
	t.Helper()
	kc, err := os.ReadFile(shippedIdentity(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(string(kc), p.target, p.addr)
	path := filepath.Join(t.TempDir(), "kubeconfig-proxy")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRecoveryAfterAnAPIServerOutageTakesSeconds: a sync that keeps failing
// through a 20 s outage has built a backoff of 8 to 16 s; once the API server
// answers again the repository converges within seconds anyway (issue 23).
func TestRecoveryAfterAnAPIServerOutageTakesSeconds(t *testing.T) {
	ns, repo, first := appsRepo(t)
	proxy := newAPIProxy(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns, "--kubeconfig", proxy.kubeconfig(t))
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	proxy.cut()
	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), second); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s, want 202", code, body)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`); n < 4 {
			return fmt.Errorf("%.0f failed syncs during the outage so far, want 4 (backoff 8 s or more)", n)
		}
		return nil
	})
	proxy.restore(t)
	back := time.Now()
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 60*time.Second)
	if took := time.Since(back); took > 5*time.Second {
		t.Fatalf("converged %v after the API server came back, want within 5 s", took)
	}
	t.Logf("converged %v after the API server came back", time.Since(back))
}
