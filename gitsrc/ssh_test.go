package gitsrc

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/gitserver"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshKey returns a new key as OpenSSH PEM (encrypted when passphrase is set)
// and its public half.
func sshKey(t *testing.T, passphrase string) ([]byte, ssh.PublicKey) {
	t.Helper()
	key, pub := gitserver.ClientKey(t)
	if passphrase == "" {
		return key, pub
	}
	raw, err := ssh.ParseRawPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(raw, "", []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), pub
}

func authFrom(t *testing.T, data map[string]string) *Auth {
	t.Helper()
	m := map[string][]byte{}
	for k, v := range data {
		m[k] = []byte(v)
	}
	a, err := AuthFromSecret("deploy-key", m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFetchOverSSH(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "org/apps")
	first := repo.CommitStrings("first", map[string]string{"deploy/a.yaml": "a: 1\n"})
	identity, pub := sshKey(t, "")
	encrypted, encryptedPub := sshKey(t, "open sesame")
	sshd := srv.StartSSH(t, pub, encryptedPub)
	auth := authFrom(t, map[string]string{"identity": string(identity), "known_hosts": sshd.KnownHosts()})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: sshd.URL(repo), Ref: Ref{Branch: "main"}, Path: "deploy", Auth: auth}

	res := mustFetch(t, f, req)
	if res.Commit != first {
		t.Fatalf("commit %s, want %s", res.Commit, first)
	}
	assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 1\n"})

	packs, adverts := sshd.UploadPacks(), sshd.RefAdvertisements()
	if res = mustFetch(t, f, req); !res.Unchanged {
		t.Fatalf("quiet poll over SSH = %+v, want unchanged", res)
	}
	if sshd.UploadPacks() != packs || sshd.RefAdvertisements() != adverts+1 {
		t.Fatalf("quiet poll made %d pack and %d ref listing requests, want 0 and 1",
			sshd.UploadPacks()-packs, sshd.RefAdvertisements()-adverts)
	}

	second := repo.CommitStrings("second", map[string]string{"deploy/a.yaml": "a: 2\n"})
	if res = mustFetch(t, f, req); res.Commit != second || sshd.UploadPacks() != packs+1 {
		t.Fatalf("after a push: %+v with %d packs, want %s with one pack", res, sshd.UploadPacks()-packs, second)
	}

	// scp-like form (go-git reads host:port:path), with an encrypted key.
	req.Key = "ns/apps-scp"
	host, port, _ := net.SplitHostPort(sshd.Addr())
	req.URL = "git@" + host + ":" + port + ":org/apps.git"
	req.Auth = authFrom(t, map[string]string{"identity": string(encrypted), "password": "open sesame", "known_hosts": sshd.KnownHosts()})
	if res = mustFetch(t, f, req); res.Commit != second {
		t.Fatalf("scp-like URL %s: commit %s, want %s", req.URL, res.Commit, second)
	}
}

func TestSSHErrors(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	identity, pub := sshKey(t, "")
	stranger, _ := sshKey(t, "")
	sshd := srv.StartSSH(t, pub)
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: sshd.URL(repo), Ref: Ref{Branch: "main"}}

	req.Auth = authFrom(t, map[string]string{"identity": string(stranger), "known_hosts": sshd.KnownHosts()})
	fetchErr(t, f, req, `refused the SSH key in key "identity" of secret "deploy-key"`, "deploy keys")

	_, otherHostKey := sshKey(t, "")
	unknown := knownhosts.Line([]string{"[127.0.0.1]:1"}, sshd.HostKey())
	req.Auth = authFrom(t, map[string]string{"identity": string(identity), "known_hosts": unknown})
	fetchErr(t, f, req, "host key of "+sshd.Addr()+` is not in key "known_hosts" of secret "deploy-key"`, "ssh-keyscan -p ")

	changed := knownhosts.Line([]string{knownhosts.Normalize(sshd.Addr())}, otherHostKey)
	req.Auth = authFrom(t, map[string]string{"identity": string(identity), "known_hosts": changed})
	fetchErr(t, f, req, "host key of "+sshd.Addr()+` does not match key "known_hosts"`, "intercepted")

	req.Auth = authFrom(t, map[string]string{"identity": string(identity), "known_hosts": sshd.KnownHosts()})
	req.Ref = Ref{Branch: "nope"}
	fetchErr(t, f, req, `branch "nope" not found in `+sshd.URL(repo))

	req.Auth = nil
	fetchErr(t, f, req, "is an SSH URL: set spec.secretRef to a Secret with keys identity and known_hosts")

	basic, err := AuthFromSecret("http-creds", map[string][]byte{"username": []byte("a"), "password": []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	req.Auth = basic
	fetchErr(t, f, req, `secret "http-creds", key "identity": missing`)
}

// A server that accepts the connection and stalls mid-handshake is bounded
// by the fetch's deadline (spec.timeout): go-git alone would wait forever.
func TestSSHStalledHandshakeBoundedByDeadline(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	commit := repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	identity, pub := sshKey(t, "")
	sshd := srv.StartSSH(t, pub)
	sshd.Stall(true)
	auth := authFrom(t, map[string]string{"identity": string(identity), "known_hosts": sshd.KnownHosts()})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/stalled", URL: sshd.URL(repo), Ref: Ref{Branch: "main"}, Auth: auth}

	const timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := f.Fetch(ctx, req); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * timeout):
		t.Fatalf("fetch from a stalled SSH server still running after %v (deadline %v)", 20*timeout, timeout)
	}
	took := time.Since(start)
	if err == nil {
		t.Fatal("fetch from a stalled SSH server succeeded")
	}
	t.Logf("after %v: %v", took, err)
	if took > 5*timeout {
		t.Errorf("fetch took %v, want under %v (5x its deadline)", took, 5*timeout)
	}
	if sshd.Stalled() == 0 {
		t.Error("no connection stalled: the test did not reach the handshake")
	}
	for _, want := range []string{sshd.URL(repo), "timed out", "SSH", "spec.timeout", "ssh -vT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not unwrap to a deadline", err)
	}

	sshd.Stall(false)
	if res := mustFetch(t, f, req); res.Commit != commit {
		t.Fatalf("after the server recovered: commit %s, want %s", res.Commit, commit)
	}
}
