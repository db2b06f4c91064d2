package gitserver

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// newKey writes an OpenSSH private key file and returns its path and public key.
func newKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	key, pub := ClientKey(t)
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// gitOverSSH runs the git CLI with OpenSSH using only the given key and
// known_hosts file.
func gitOverSSH(t *testing.T, key, knownHosts string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_SSH_COMMAND=ssh -F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes"+
			" -o UserKnownHostsFile="+knownHosts+" -i "+key)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestSSHServesUploadPackToOpenSSH(t *testing.T) {
	srv := New(t)
	repo := srv.CreateRepo(t, "apps")
	sha := repo.CommitStrings("first", map[string]string{"deploy/cm.yaml": "kind: ConfigMap\n"})
	key, pub := newKey(t)
	sshd := srv.StartSSH(t, pub)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(sshd.KnownHosts()), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := gitOverSSH(t, key, knownHosts, "ls-remote", sshd.URL(repo), "refs/heads/main")
	if err != nil || !strings.HasPrefix(out, sha) {
		t.Fatalf("ls-remote over ssh = %q, %v; want %s", out, err, sha)
	}
	if got := sshd.UploadPacks(); got != 0 {
		t.Fatalf("after ls-remote, upload packs = %d, want 0", got)
	}

	dst := filepath.Join(t.TempDir(), "clone")
	if out, err := gitOverSSH(t, key, knownHosts, "clone", "--quiet", sshd.URL(repo), dst); err != nil {
		t.Fatalf("clone over ssh: %v\n%s", err, out)
	}
	assertFile(t, filepath.Join(dst, "deploy", "cm.yaml"), "kind: ConfigMap\n")
	if got := sshd.UploadPacks(); got != 1 {
		t.Fatalf("after clone, upload packs = %d, want 1", got)
	}
	if got := sshd.RefAdvertisements(); got != 2 {
		t.Fatalf("ref advertisements = %d, want 2 (ls-remote and clone)", got)
	}
}

func TestSSHRefusesUnknownKeyAndOtherCommands(t *testing.T) {
	srv := New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	_, trusted := newKey(t)
	other, _ := newKey(t)
	sshd := srv.StartSSH(t, trusted)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(sshd.KnownHosts()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := gitOverSSH(t, other, knownHosts, "ls-remote", sshd.URL(repo)); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ls-remote with an unauthorized key: %v, %q; want Permission denied", err, out)
	}

	for _, cmd := range []string{"git-receive-pack '/apps.git'", "git-upload-pack '/../../etc'", "sh -c id"} {
		if _, err := sshd.repoPath(cmd); err == nil {
			t.Errorf("command %q was accepted", cmd)
		}
	}
	if got, err := sshd.repoPath("git-upload-pack 'org/apps.git'"); err != nil || got != filepath.Join(srv.root, "org", "apps.git") {
		t.Errorf("scp-like path maps to %q, %v", got, err)
	}
}

// TestSSHStallMode: a stalling server sends its version line and never
// answers the key exchange; switched back, it serves again.
func TestSSHStallMode(t *testing.T) {
	srv := New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	_, pub := newKey(t)
	sshd := srv.StartSSH(t, pub)
	handshake := func() error {
		conn, err := net.Dial("tcp", sshd.Addr())
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
		cfg := &ssh.ClientConfig{User: "git", HostKeyCallback: ssh.FixedHostKey(sshd.HostKey())}
		_, _, _, err = ssh.NewClientConn(conn, sshd.Addr(), cfg)
		return err
	}

	sshd.Stall(true)
	if err := handshake(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("handshake with a stalling server: %v, want a timeout", err)
	}
	if sshd.Stalled() != 1 {
		t.Fatalf("stalled connections = %d, want 1", sshd.Stalled())
	}
	sshd.Stall(false)
	// No key offered: the handshake gets as far as authentication.
	if err := handshake(); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("handshake after Stall(false): %v, want it to reach authentication", err)
	}
}
