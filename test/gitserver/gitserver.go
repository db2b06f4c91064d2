// Package gitserver serves git repositories to tests over smart HTTP through
// the real `git http-backend` (as CGI) on loopback, optionally behind basic
// auth. Repositories are made and changed with the git CLI, so what the
// server holds is exactly what a user's push would leave.
package gitserver

import (
	"crypto/subtle"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server is a smart-HTTP git server for one test.
type Server struct {
	root     string // bare repositories, <name>.git
	work     string // working clones used to make commits
	http     *httptest.Server
	user     string
	password string

	uploadPacks atomic.Int64                  // POST git-upload-pack: fetches that send a pack
	refAdverts  atomic.Int64                  // GET info/refs?service=git-upload-pack
	failStatus  atomic.Int32                  // when non-zero, every request is answered with it
	delay       atomic.Int64                  // nanoseconds every request waits before an answer
	listingGate atomic.Pointer[chan struct{}] // when set, ref listings wait until it is closed

	mu       sync.Mutex
	served   []Served
	answered chan struct{} // closed, and replaced, whenever a request is answered
}

// Served is one request the server answered: its request line, when it
// arrived and how long the answer took (the git processes behind it
// included, and any Delay or HoldListings wait), so that a test can tell
// the server's share of a fetch.
type Served struct {
	Request string
	Start   time.Time
	Took    time.Duration // zero while the answer is being written
}

// Option configures a Server.
type Option func(*Server)

// WithBasicAuth makes the server require these credentials.
func WithBasicAuth(user, password string) Option {
	return func(s *Server) { s.user, s.password = user, password }
}

// New starts a server that stops when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("gitserver needs the git CLI: %v", err)
	}
	dir := t.TempDir()
	s := &Server{root: filepath.Join(dir, "repos"), work: filepath.Join(dir, "work"), answered: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{s.root, s.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	prog, args := httpBackend(gitPath)
	backend := &cgi.Handler{
		Path: prog,
		Args: args,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + dir,
		},
	}
	s.http = httptest.NewServer(s.wrap(backend))
	t.Cleanup(s.http.Close)
	return s
}

// httpBackend is the git-http-backend program itself, as web servers run
// it: starting it through the git wrapper costs one more process per
// request. It falls back to "git http-backend" when git's exec path does
// not hold the program.
func httpBackend(gitPath string) (prog string, args []string) {
	if out, err := exec.Command(gitPath, "--exec-path").Output(); err == nil {
		direct := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
		if _, err := os.Stat(direct); err == nil {
			return direct, nil
		}
	}
	return gitPath, []string{"http-backend"}
}

// wrap counts requests and enforces basic auth in front of http-backend.
func (s *Server) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		start := time.Now() // under the lock, so that served stays in order of Start
		i := len(s.served)
		s.served = append(s.served, Served{Request: r.Method + " " + r.URL.RequestURI(), Start: start})
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.served[i].Took = time.Since(start)
			close(s.answered)
			s.answered = make(chan struct{})
			s.mu.Unlock()
		}()
		if s.user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(s.password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if code := s.failStatus.Load(); code != 0 {
			http.Error(w, "injected failure", int(code))
			return
		}
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			s.uploadPacks.Add(1)
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/info/refs") &&
			r.URL.Query().Get("service") == "git-upload-pack":
			s.refAdverts.Add(1)
			if gate := s.listingGate.Load(); gate != nil {
				select {
				case <-*gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// FailWith makes the server answer every request with HTTP status code, as a
// failing git host does; 0 serves normally again.
func (s *Server) FailWith(code int) { s.failStatus.Store(int32(code)) }

// Delay makes the server wait d before answering each request; 0 answers at
// once again.
func (s *Server) Delay(d time.Duration) { s.delay.Store(int64(d)) }

// HoldListings makes ref listings wait, counted but unanswered, until
// release is called: a test can see what a client does before its listing
// comes back.
func (s *Server) HoldListings() (release func()) {
	gate := make(chan struct{})
	s.listingGate.Store(&gate)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.listingGate.Store(nil)
			close(gate)
		})
	}
}

// UploadPacks is the number of fetch requests that asked for a pack.
func (s *Server) UploadPacks() int64 { return s.uploadPacks.Load() }

// RefAdvertisements is the number of ref listings (ls-remote, or the first
// step of a fetch).
func (s *Server) RefAdvertisements() int64 { return s.refAdverts.Load() }

// Requests returns every request line served so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := make([]string, len(s.served))
	for i, r := range s.served {
		lines[i] = r.Request
	}
	return lines
}

// servedSince returns the requests for paths under prefix that arrived at
// or after from, in the order they arrived. A client can see its answer
// before the server has noted its time, so it waits up to a second for
// those still being answered; any left then have a zero Took.
func (s *Server) servedSince(from time.Time, prefix string) []Served {
	timeout := time.NewTimer(time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		i := sort.Search(len(s.served), func(i int) bool { return !s.served[i].Start.Before(from) })
		var served []Served
		for _, r := range s.served[i:] {
			if _, path, _ := strings.Cut(r.Request, " "); strings.HasPrefix(path, prefix) {
				served = append(served, r)
			}
		}
		answered := s.answered
		s.mu.Unlock()
		if !slices.ContainsFunc(served, func(r Served) bool { return r.Took == 0 }) {
			return served
		}
		select {
		case <-answered:
		case <-timeout.C:
			return served
		}
	}
}

// BaseURL is the server's root URL, without credentials.
func (s *Server) BaseURL() string { return s.http.URL }

// Repo is one repository on the server, with a working clone that tests
// commit through.
type Repo struct {
	t      testing.TB
	server *Server
	name   string
	bare   string
	work   string
}

// CreateRepo makes an empty repository whose default branch is main.
func (s *Server) CreateRepo(t testing.TB, name string) *Repo {
	t.Helper()
	r := &Repo{t: t, server: s, name: name,
		bare: filepath.Join(s.root, name+".git"), work: filepath.Join(s.work, name)}
	run(t, s.root, "git", "init", "--quiet", "--bare", "--initial-branch=main", r.bare)
	run(t, r.bare, "git", "config", "http.receivepack", "true")
	run(t, s.work, "git", "init", "--quiet", "--initial-branch=main", r.work)
	r.Git("config", "user.email", "test@alumiini.invalid")
	r.Git("config", "user.name", "ALUMIINI test")
	r.Git("config", "commit.gpgsign", "false")
	r.Git("remote", "add", "origin", r.bare)
	return r
}

// URL is the repository's clone URL over HTTP, without credentials.
func (r *Repo) URL() string { return r.server.http.URL + "/" + r.name + ".git" }

// ServedSince returns the requests for this repository that arrived at or
// after from, in order, each with the time its answer took.
func (r *Repo) ServedSince(from time.Time) []Served {
	return r.server.servedSince(from, "/"+r.name+".git/")
}

// Longest is the longest time one of served took: a fetch's ref listing
// and its pack request run side by side, so it is the server's share.
func Longest(served []Served) time.Duration {
	var longest time.Duration
	for _, r := range served {
		longest = max(longest, r.Took)
	}
	return longest
}

// Server is the server that serves the repository.
func (r *Repo) Server() *Server { return r.server }

// BareDir is the bare repository on disk (usable as a file:// URL).
func (r *Repo) BareDir() string { return r.bare }

// WorkDir is the working clone tests commit through.
func (r *Repo) WorkDir() string { return r.work }

// Git runs a git command in the working clone and returns its trimmed
// output, failing the test on error.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return run(r.t, r.work, "git", args...)
}

// Commit writes files (a nil value deletes the file) on the current branch,
// commits them, pushes the branch and returns the new commit SHA.
func (r *Repo) Commit(message string, files map[string][]byte) string {
	r.t.Helper()
	r.writeFiles(files)
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "-m", message)
	branch := r.Git("rev-parse", "--abbrev-ref", "HEAD")
	r.Git("push", "--quiet", "--force", "origin", branch)
	return r.Git("rev-parse", "HEAD")
}

// CommitStrings is Commit for text files; an empty string deletes.
func (r *Repo) CommitStrings(message string, files map[string]string) string {
	r.t.Helper()
	m := make(map[string][]byte, len(files))
	for k, v := range files {
		if v == "" {
			m[k] = nil
		} else {
			m[k] = []byte(v)
		}
	}
	return r.Commit(message, m)
}

// Symlink adds a symbolic link (not yet committed: follow with Commit).
func (r *Repo) Symlink(target, path string) {
	r.t.Helper()
	full := filepath.Join(r.work, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		r.t.Fatal(err)
	}
}

// Checkout switches the working clone to branch, creating it from the
// current commit when it does not exist.
func (r *Repo) Checkout(branch string) {
	r.t.Helper()
	r.Git("checkout", "--quiet", "-B", branch)
}

// Tag tags HEAD and pushes the tag.
func (r *Repo) Tag(name string) {
	r.t.Helper()
	r.Git("tag", "--force", name)
	r.Git("push", "--quiet", "--force", "origin", "refs/tags/"+name)
}

// ForcePushReset rewrites history: the current branch is reset to rev and
// force-pushed.
func (r *Repo) ForcePushReset(rev string) {
	r.t.Helper()
	r.Git("reset", "--quiet", "--hard", rev)
	branch := r.Git("rev-parse", "--abbrev-ref", "HEAD")
	r.Git("push", "--quiet", "--force", "origin", branch)
}

// DeleteBranch removes a branch from the server.
func (r *Repo) DeleteBranch(branch string) {
	r.t.Helper()
	r.Git("push", "--quiet", "origin", "--delete", branch)
}

func (r *Repo) writeFiles(files map[string][]byte) {
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		full := filepath.Join(r.work, filepath.FromSlash(name))
		if files[name] == nil {
			if err := os.RemoveAll(full); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, files[name], 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

func run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(string(out))
}
