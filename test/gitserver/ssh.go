package gitserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves the repositories of a Server over SSH on loopback. It
// accepts only the given public keys and answers exec requests of the form
// git-upload-pack '<path>' by running the real git-upload-pack, so clients
// talk to git exactly as they would behind a hosting service's SSH endpoint.
type SSHServer struct {
	root     string
	listener net.Listener
	hostKey  ssh.Signer
	config   *ssh.ServerConfig

	uploadPacks atomic.Int64 // upload-pack sessions in which the client asked for objects
	refAdverts  atomic.Int64 // upload-pack sessions started (each begins with a ref listing)
	stall       atomic.Bool  // new connections stall mid-handshake
	stalled     atomic.Int64 // connections that stalled

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartSSH serves s's repositories over SSH to clients holding one of the
// authorized keys. It stops when the test ends.
func (s *Server) StartSSH(t testing.TB, authorized ...ssh.PublicKey) *SSHServer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &SSHServer{root: s.root, listener: ln, hostKey: hostKey, conns: map[net.Conn]struct{}{}}
	srv.config = &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		for _, k := range authorized {
			if string(k.Marshal()) == string(key.Marshal()) {
				return nil, nil
			}
		}
		return nil, errors.New("public key not authorized")
	}}
	srv.config.AddHostKey(hostKey)
	srv.wg.Add(1)
	go srv.accept()
	t.Cleanup(srv.close)
	return srv
}

// ClientKey returns a new ed25519 client key: the private half as OpenSSH
// PEM (the identity of a git credentials Secret), and the public half to
// pass to StartSSH.
func ClientKey(t testing.TB) ([]byte, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), sshPub
}

// Addr is the server's host:port.
func (s *SSHServer) Addr() string { return s.listener.Addr().String() }

// URL is the repository's ssh:// clone URL, user git.
func (s *SSHServer) URL(r *Repo) string { return "ssh://git@" + s.Addr() + "/" + r.name + ".git" }

// HostKey is the server's public host key.
func (s *SSHServer) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// KnownHosts is a known_hosts line that trusts this server.
func (s *SSHServer) KnownHosts() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, s.HostKey()) + "\n"
}

// UploadPacks is the number of upload-pack sessions in which the client asked
// for objects (a fetch), as opposed to only listing refs.
func (s *SSHServer) UploadPacks() int64 { return s.uploadPacks.Load() }

// RefAdvertisements is the number of upload-pack sessions (ls-remote, or the
// first step of a fetch).
func (s *SSHServer) RefAdvertisements() int64 { return s.refAdverts.Load() }

// Stall makes the connections accepted from now on (until Stall(false))
// stall mid-handshake: the server sends its SSH version line, then reads
// and discards what the client sends and never answers its key exchange.
// It stands for a hung sshd, or a middlebox that accepts connections and
// forwards nothing, which a client escapes only by its own deadline. A
// stalled connection is held until the client hangs up or the test ends.
func (s *SSHServer) Stall(on bool) { s.stall.Store(on) }

// Stalled is the number of connections that stalled mid-handshake.
func (s *SSHServer) Stalled() int64 { return s.stalled.Load() }

func (s *SSHServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return // listener closed
		}
		s.mu.Lock()
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

func (s *SSHServer) close() {
	_ = s.listener.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *SSHServer) serveConn(conn net.Conn) {
	defer conn.Close()
	if s.stall.Load() {
		s.stalled.Add(1)
		_, _ = io.WriteString(conn, "SSH-2.0-stalling\r\n")
		_, _ = io.Copy(io.Discard, conn)
		return
	}
	sconn, chans, reqs, err := ssh.NewServerConn(conn, s.config)
	if err != nil {
		return // failed handshake: wrong key, unknown host key on the client side...
	}
	defer sconn.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions are served")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveSession(ch, chReqs)
		}()
	}
}

// serveSession runs the first exec request of a session and ignores the rest
// (env requests such as GIT_PROTOCOL are acknowledged but not applied).
func (s *SSHServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "env":
			_ = req.Reply(true, nil)
		case "exec":
			var payload struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			repo, err := s.repoPath(payload.Command)
			if err != nil {
				_ = req.Reply(false, nil)
				return
			}
			_ = req.Reply(true, nil)
			status := s.uploadPack(ch, repo)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			return
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// repoPath maps "git-upload-pack '<path>'" to a bare repository under root.
func (s *SSHServer) repoPath(command string) (string, error) {
	arg, ok := strings.CutPrefix(command, "git-upload-pack ")
	if !ok {
		return "", fmt.Errorf("only git-upload-pack is served, got %q", command)
	}
	arg = strings.Trim(arg, "'")
	rel := filepath.Clean(strings.TrimPrefix(arg, "/"))
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("path %q escapes the repository root", arg)
	}
	return filepath.Join(s.root, rel), nil
}

// uploadPack runs git-upload-pack for one session and returns its exit code.
func (s *SSHServer) uploadPack(ch ssh.Channel, repo string) uint32 {
	s.refAdverts.Add(1)
	cmd := exec.Command("git-upload-pack", repo)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1
	}
	if err := cmd.Start(); err != nil {
		return 1
	}
	// Copy stdin ourselves rather than through cmd.Stdin: Wait would block on
	// a copy that waits for client input after upload-pack has exited. The
	// copy ends when the session's channel closes.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, _ = io.Copy(stdin, &wantDetector{r: ch, onWant: func() { s.uploadPacks.Add(1) }})
		_ = stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return uint32(exit.ExitCode())
		}
		return 1
	}
	return 0
}

// wantDetector watches the client's first pkt-line: a flush ("0000") means
// the client only listed refs; anything else is a want, the start of a fetch.
type wantDetector struct {
	r      io.Reader
	first  []byte
	onWant func()
}

func (d *wantDetector) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if need := 4 - len(d.first); need > 0 && n > 0 {
		d.first = append(d.first, p[:min(n, need)]...)
		if len(d.first) == 4 && string(d.first) != "0000" {
			d.onWant()
		}
	}
	return n, err
}
