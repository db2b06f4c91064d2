package gitserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// StallingSSH is an SSH server that stalls mid-handshake: it accepts TCP
// connections, sends its SSH version line, then reads and discards what the
// client sends and never answers its key exchange. It stands for a git host
// whose sshd hangs, or a middlebox that accepts connections and forwards
// nothing, which a client can only escape by its own deadline.
type StallingSSH struct {
	listener net.Listener
	hostKey  ssh.PublicKey
	accepted atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// StartStallingSSH starts a stalling SSH server on loopback; it stops (closing
// every held connection) when the test ends.
func StartStallingSSH(t testing.TB) *StallingSSH {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &StallingSSH{listener: ln, hostKey: hostKey}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// Addr is the server's host:port.
func (s *StallingSSH) Addr() string { return s.listener.Addr().String() }

// URL is an ssh:// URL of a repository on this server, user git.
func (s *StallingSSH) URL(name string) string { return "ssh://git@" + s.Addr() + "/" + name + ".git" }

// KnownHosts is a known_hosts line for this server (its key is never shown:
// the handshake never gets that far).
func (s *StallingSSH) KnownHosts() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, s.hostKey) + "\n"
}

// Accepted is the number of TCP connections accepted so far.
func (s *StallingSSH) Accepted() int64 { return s.accepted.Load() }

func (s *StallingSSH) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return // listener closed
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, conn)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, _ = io.WriteString(conn, "SSH-2.0-stalling\r\n")
			_, _ = io.Copy(io.Discard, conn) // until the client gives up or close
		}()
	}
}

func (s *StallingSSH) close() {
	_ = s.listener.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
