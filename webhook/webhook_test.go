package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

const (
	globalSecret = "global-webhook-secret"
	repoSecret   = "per-repo-webhook-secret"
)

// Repositories as the fixtures name them, in the forms users write.
var (
	ghURL = "git@github.com:false-systems/platform-config.git" // payload spells the org False-Systems
	glURL = "https://gitlab.example.com/platform/fleet-manifests"
	bcURL = "git@bitbucket.org:kaamos-labs/cluster-state.git"
	bsURL = "https://bitbucket.corp.example/scm/plat/k8s-manifests.git"
)

func TestHandler(t *testing.T) {
	global := Config{Secret: []byte(globalSecret)}
	withSecretRef := func(s *v1alpha1.GitRepositorySpec) {
		s.WebhookSecretRef = &v1alpha1.LocalObjectReference{Name: "hook"}
	}
	secrets := secretMap{"apps/hook": []byte(repoSecret)}
	const ghCommit = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"

	tests := []struct {
		name       string
		cfg        Config
		repos      []*v1alpha1.GitRepository
		req        request
		wantCode   int
		wantStatus string
		want       []trigger
		wantReply  *reply // checked when set
	}{
		{
			name: "github push", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/config", ghCommit}},
			wantReply: &reply{Status: resultTriggered, Triggered: []string{"apps/config"}},
		},
		{
			name: "github push signed with another secret", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", "not-the-secret"),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "github push without signature", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", ""),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "unknown repository", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "other", "https://github.com/false-systems/other")},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusNotFound, wantStatus: resultUnmatched,
		},
		{
			name: "unknown repository, bad signature: 401 before 404", cfg: global,
			req:      github(t, "push", "github-push.json", "not-the-secret"),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "push to a branch nobody follows", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Branch = "develop" })},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusNotFound, wantStatus: resultUnmatched,
		},
		{
			name: "tag push triggers the repository pinned to that tag only", cfg: global,
			repos: []*v1alpha1.GitRepository{
				gitRepo("apps", "branch", ghURL),
				gitRepo("apps", "tag", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Tag = "v1.4.0" }),
				gitRepo("apps", "other-tag", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Tag = "v1.3.0" }),
				gitRepo("apps", "commit", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Tag, s.Commit = "v1.4.0", ghCommit }),
			},
			req:      github(t, "push", "github-push-tag.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/tag", ghCommit}},
		},
		{
			name: "commit-pinned repositories are never triggered", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "commit", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Commit = "6113728" })},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusNotFound, wantStatus: resultUnmatched,
		},
		{
			name: "deleted branch", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-delete.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultIgnored,
		},
		{
			name: "ping", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "ping", "github-ping.json", globalSecret),
			wantCode: http.StatusOK, wantStatus: resultPong,
		},
		{
			name: "ping with a wrong secret", cfg: global,
			req:      github(t, "ping", "github-ping.json", "not-the-secret"),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "event that is not a push", cfg: global,
			req:      github(t, "issues", `{"action":"opened"}`, globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultIgnored,
		},
		{
			name: "malformed JSON", cfg: global, req: github(t, "push", `{"ref": "refs/heads/main", "repository": {`, globalSecret),
			wantCode: http.StatusBadRequest, wantStatus: resultInvalid,
		},
		{
			name: "suspended repository", cfg: global,
			repos: []*v1alpha1.GitRepository{
				gitRepo("apps", "paused", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Suspend = true }),
				gitRepo("apps", "live", ghURL),
			},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/live", ghCommit}},
			wantReply: &reply{Status: resultTriggered, Triggered: []string{"apps/live"}, Suspended: []string{"apps/paused"}},
		},
		{
			name: "only suspended repositories match", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "paused", ghURL, func(s *v1alpha1.GitRepositorySpec) { s.Suspend = true })},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultSuspended,
		},
		{
			name: "per-repository secret verifies its repository only", cfg: global,
			repos: []*v1alpha1.GitRepository{
				gitRepo("apps", "own-secret", ghURL, withSecretRef),
				gitRepo("apps", "global-secret", ghURL),
			},
			req:      github(t, "push", "github-push.json", repoSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/own-secret", ghCommit}},
		},
		{
			name: "global secret does not verify a repository with its own", cfg: global,
			repos: []*v1alpha1.GitRepository{
				gitRepo("apps", "own-secret", ghURL, withSecretRef),
				gitRepo("apps", "global-secret", ghURL),
			},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/global-secret", ghCommit}},
		},
		{
			name: "global secret alone cannot trigger a repository with its own secret", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "own-secret", ghURL, withSecretRef)},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name:     "per-repository secret without any global secret",
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "own-secret", ghURL, withSecretRef)},
			req:      github(t, "push", "github-push.json", repoSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/own-secret", ghCommit}},
		},
		{
			name: "missing webhook Secret does not fall back to the global one", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("other-ns", "config", ghURL, withSecretRef)},
			req:      github(t, "push", "github-push.json", globalSecret),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "no secret configured refuses", repos: []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", ""),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "no secret configured, insecure allowed", cfg: Config{AllowInsecure: true},
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", ""),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"apps/config", ghCommit}},
		},
		{
			name: "insecure flag does not bypass a configured secret", cfg: Config{Secret: []byte(globalSecret), AllowInsecure: true},
			repos:    []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)},
			req:      github(t, "push", "github-push.json", ""),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "gitlab push", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("fleet", "prod", glURL, func(s *v1alpha1.GitRepositorySpec) { s.Branch = "production" })},
			req:      gitlab("Push Hook", payload(t, "gitlab-push.json"), globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"fleet/prod", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}},
		},
		{
			name: "gitlab wrong token", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("fleet", "prod", glURL, func(s *v1alpha1.GitRepositorySpec) { s.Branch = "production" })},
			req:      gitlab("Push Hook", payload(t, "gitlab-push.json"), globalSecret+"x"),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "gitlab tag push", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("fleet", "release", glURL+".git", func(s *v1alpha1.GitRepositorySpec) { s.Tag = "release-2026.01" })},
			req:      gitlab("Tag Push Hook", payload(t, "gitlab-tag-push.json"), globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"fleet/release", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}},
		},
		{
			name: "gitlab system hook push, non-default ports", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("edge", "base", "ssh://git@gitlab.example.com:2222/infra/edge-base")},
			req:      gitlab("System Hook", payload(t, "gitlab-system-push.json"), globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"edge/base", "1f0a54e9a4e0b1cf1a3d7d0a2c86bd8bb1f5b6a0"}},
		},
		{
			name: "gitlab system hook, port must match", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("edge", "base", "https://gitlab.example.com/infra/edge-base")},
			req:      gitlab("System Hook", payload(t, "gitlab-system-push.json"), globalSecret),
			wantCode: http.StatusNotFound, wantStatus: resultUnmatched,
		},
		{
			name: "gitlab system hook that is not a push", cfg: global,
			req:      gitlab("System Hook", payload(t, "gitlab-system-project-create.json"), globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultIgnored,
		},
		{
			name: "bitbucket cloud push", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("ops", "state", bcURL)},
			req:      bitbucket(t, "repo:push", "bitbucket-cloud-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"ops/state", "4e2c8a9d1b0f7e6a5c3d2e1f0a9b8c7d6e5f4a3b"}},
		},
		{
			name: "bitbucket cloud bad signature", cfg: global, repos: []*v1alpha1.GitRepository{gitRepo("ops", "state", bcURL)},
			req:      bitbucket(t, "repo:push", "bitbucket-cloud-push.json", "not-the-secret"),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "bitbucket server push with a deleted branch alongside", cfg: global,
			repos: []*v1alpha1.GitRepository{
				gitRepo("plat", "release", bsURL, func(s *v1alpha1.GitRepositorySpec) { s.Branch = "release" }),
				gitRepo("plat", "experiment", "ssh://git@bitbucket.corp.example:7999/plat/k8s-manifests.git",
					func(s *v1alpha1.GitRepositorySpec) { s.Branch = "old-experiment" }),
			},
			req:      bitbucket(t, "repo:refs_changed", "bitbucket-server-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"plat/release", "c8f2a1d7e4b3a6f5e0d9c8b7a6f5e4d3c2b1a0f9"}},
		},
		{
			name: "bitbucket server test connection", cfg: global,
			req:      bitbucket(t, "diagnostics:ping", "bitbucket-server-ping.json", globalSecret),
			wantCode: http.StatusOK, wantStatus: resultPong,
		},
		{
			name: "bitbucket pull request", cfg: global,
			req:      bitbucket(t, "pullrequest:created", `{}`, globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultIgnored,
		},
		{
			name: "generic push", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("ops", "cluster", "ssh://git@git.internal.example:2222/ops/cluster")},
			req:      generic(t, "generic-push.json", globalSecret),
			wantCode: http.StatusAccepted, wantStatus: resultTriggered, want: []trigger{{"ops/cluster", "e83c5163316f89bfbde7d9ab23ca2e25604af290"}},
		},
		{
			name: "generic push without signature", cfg: global,
			repos:    []*v1alpha1.GitRepository{gitRepo("ops", "cluster", "ssh://git@git.internal.example:2222/ops/cluster")},
			req:      generic(t, "generic-push.json", ""),
			wantCode: http.StatusUnauthorized, wantStatus: resultUnauthorized,
		},
		{
			name: "generic push missing fields", cfg: global,
			req:      generic(t, `{"commit":"e83c516"}`, globalSecret),
			wantCode: http.StatusBadRequest, wantStatus: resultInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, sink := start(t, tt.cfg, secrets, tt.repos...)
			code, rep := send(t, srv, tt.req)
			if code != tt.wantCode || rep.Status != tt.wantStatus {
				t.Fatalf("reply = %d %+v, want %d with status %q", code, rep, tt.wantCode, tt.wantStatus)
			}
			if got := sink.triggers(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("sink got %v, want %v", got, tt.want)
			}
			if tt.wantReply != nil {
				rep.Message = ""
				if !reflect.DeepEqual(rep, *tt.wantReply) {
					t.Errorf("reply = %+v, want %+v", rep, *tt.wantReply)
				}
			}
			if code >= 400 && rep.Message == "" {
				t.Errorf("error reply %d has no message saying what to fix", code)
			}
		})
	}
}

func TestHandlerBodyLimit(t *testing.T) {
	repos := []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)}
	body := payload(t, "github-push.json")

	srv, sink := start(t, Config{Secret: []byte(globalSecret), MaxBodyBytes: int64(len(body) - 1)}, nil, repos...)
	if code, rep := send(t, srv, github(t, "push", string(body), globalSecret)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("body one byte over the limit: %d %+v, want 413", code, rep)
	}

	if got := sink.triggers(); got != nil {
		t.Errorf("oversized body triggered %v", got)
	}

	srv, sink = start(t, Config{Secret: []byte(globalSecret)}, nil, repos...)
	big := append(bytes.Repeat([]byte(" "), int(DefaultMaxBodyBytes)), body...)
	if code, rep := send(t, srv, github(t, "push", string(big), globalSecret)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the default 1 MiB: %d %+v, want 413", code, rep)
	}
	if got := sink.triggers(); got != nil {
		t.Errorf("oversized body triggered %v", got)
	}
}

func TestHandlerMethodAndPath(t *testing.T) {
	srv, _ := start(t, Config{Secret: []byte(globalSecret)}, nil)
	for _, provider := range []string{"github", "gitlab", "bitbucket", "generic"} {
		resp, err := http.Get(srv.URL + "/webhook/" + provider)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET /webhook/%s = %d, Allow %q; want 405, Allow POST", provider, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	resp, err := http.Post(srv.URL+"/webhook/gitea", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /webhook/gitea = %d, want 404", resp.StatusCode)
	}
}

func TestHandlerSinkFailure(t *testing.T) {
	srv, sink := start(t, Config{Secret: []byte(globalSecret)}, nil, gitRepo("apps", "config", ghURL))
	sink.err = errors.New("mailbox full")
	code, rep := send(t, srv, github(t, "push", "github-push.json", globalSecret))
	if code != http.StatusServiceUnavailable || !reflect.DeepEqual(rep.Failed, []string{"apps/config"}) {
		t.Errorf("reply = %d %+v, want 503 naming apps/config as failed", code, rep)
	}
}

func TestHandlerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Secret: []byte(globalSecret), Metrics: reg}
	srv, _ := start(t, cfg, nil, gitRepo("apps", "config", ghURL))
	// A second handler on the same registry shares the counter.
	srv2, _ := start(t, cfg, nil, gitRepo("apps", "config", ghURL))

	send(t, srv, github(t, "push", "github-push.json", globalSecret))
	send(t, srv2, github(t, "push", "github-push.json", globalSecret))
	send(t, srv, github(t, "push", "github-push.json", "not-the-secret"))

	c, err := reg.Gather()
	if err != nil || len(c) != 1 {
		t.Fatalf("gathered %d metric families (%v), want 1", len(c), err)
	}
	counter := requestCounter(reg, zap.NewNop()) // hands back the registered counter
	if got := testutil.ToFloat64(counter.WithLabelValues("github", resultTriggered)); got != 2 {
		t.Errorf("github triggered = %v, want 2", got)
	}
	if got := testutil.ToFloat64(counter.WithLabelValues("github", resultUnauthorized)); got != 1 {
		t.Errorf("github unauthorized = %v, want 1", got)
	}
}

// TestHandlerNeverLogsSecrets drives accepted and refused requests with debug
// logging on and checks that no log entry carries a secret or signature.
func TestHandlerNeverLogsSecrets(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	cfg := Config{Secret: []byte(globalSecret), Logger: zap.New(core)}
	repos := []*v1alpha1.GitRepository{
		gitRepo("apps", "config", ghURL),
		gitRepo("apps", "own", ghURL, func(s *v1alpha1.GitRepositorySpec) {
			s.WebhookSecretRef = &v1alpha1.LocalObjectReference{Name: "hook"}
		}),
	}
	srv, _ := start(t, cfg, secretMap{"apps/hook": []byte(repoSecret)}, repos...)
	good := github(t, "push", "github-push.json", globalSecret)
	bad := github(t, "push", "github-push.json", "guessed-secret")
	gl := gitlab("Push Hook", payload(t, "gitlab-push.json"), "guessed-token")
	for _, r := range []request{good, bad, gl} {
		send(t, srv, r)
	}

	if logs.Len() == 0 {
		t.Fatal("no log entries: the test would prove nothing")
	}
	forbidden := []string{globalSecret, repoSecret, "guessed-secret", "guessed-token",
		strings.TrimPrefix(good.header.Get("X-Hub-Signature-256"), "sha256="),
		strings.TrimPrefix(bad.header.Get("X-Hub-Signature-256"), "sha256=")}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		for _, f := range forbidden {
			if strings.Contains(line, f) {
				t.Errorf("log entry %q contains a secret or signature", line)
			}
		}
	}
}

// --- helpers ---

type trigger struct{ key, commit string }

// recordingSink records the triggers it receives, in order.
type recordingSink struct {
	mu  sync.Mutex
	got []trigger
	err error
}

func (s *recordingSink) Webhook(key types.NamespacedName, commit string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.got = append(s.got, trigger{key.String(), commit})
	return nil
}

func (s *recordingSink) triggers() []trigger {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

type repoList []*v1alpha1.GitRepository

func (l repoList) List() []*v1alpha1.GitRepository { return l }

// secretMap holds the "token" of Secrets by "namespace/name".
type secretMap map[string][]byte

func (m secretMap) SecretValue(_ context.Context, namespace, name, key string) ([]byte, error) {
	v, ok := m[namespace+"/"+name]
	if !ok || key != SecretKey {
		return nil, fmt.Errorf("secret %s/%s key %q not found", namespace, name, key)
	}
	return v, nil
}

// start serves a handler over real HTTP for the duration of the test.
func start(t testing.TB, cfg Config, secrets Secrets, repos ...*v1alpha1.GitRepository) (*httptest.Server, *recordingSink) {
	t.Helper()
	sink := &recordingSink{}
	if secrets == nil {
		secrets = secretMap{}
	}
	srv := httptest.NewServer(NewHandler(cfg, repoList(repos), secrets, sink))
	t.Cleanup(srv.Close)
	return srv, sink
}

type request struct {
	path   string
	header http.Header
	body   []byte
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// signed builds a request whose header sigHeader carries the HMAC of body,
// unless secret is empty.
func signed(path, sigHeader, secret string, body []byte, kv ...string) request {
	h := hdr(kv...)
	h.Set("Content-Type", "application/json")
	if secret != "" {
		h.Set(sigHeader, sign(secret, body))
	}
	return request{path: path, header: h, body: body}
}

func github(t testing.TB, event, body, secret string) request {
	return signed("/webhook/github", "X-Hub-Signature-256", secret, payload(t, body), "X-GitHub-Event", event)
}

func bitbucket(t testing.TB, key, body, secret string) request {
	return signed("/webhook/bitbucket", "X-Hub-Signature", secret, payload(t, body), "X-Event-Key", key)
}

func generic(t testing.TB, body, secret string) request {
	return signed("/webhook/generic", "X-Signature", secret, payload(t, body))
}

func gitlab(event string, body []byte, token string) request {
	h := hdr("X-Gitlab-Event", event, "Content-Type", "application/json", "X-Gitlab-Token", token)
	return request{path: "/webhook/gitlab", header: h, body: body}
}

// send posts req and decodes the JSON reply.
func send(t testing.TB, srv *httptest.Server, req request) (int, reply) {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, srv.URL+req.path, bytes.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header = req.header
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatalf("POST %s: %v", req.path, err)
	}
	defer resp.Body.Close()
	var rep reply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatalf("POST %s: %d reply is not JSON: %v", req.path, resp.StatusCode, err)
	}
	return resp.StatusCode, rep
}
