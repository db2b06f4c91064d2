package gitsrc

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
)

// Keys of a git credentials Secret (design.md §1, spec.secretRef).
const (
	KeyUsername    = "username"
	KeyPassword    = "password" // HTTPS password, or the passphrase of identity
	KeyBearerToken = "bearerToken"
	KeyIdentity    = "identity"
	KeyKnownHosts  = "known_hosts"
	KeyCA          = "ca.crt"
)

// Auth is the credentials for one repository, parsed from its Secret. It
// never prints its contents.
type Auth struct {
	secret   string
	username string
	password string
	bearer   string
	caBundle []byte
	signer   ssh.Signer
	hosts    *knownhosts.HostKeyDB
}

// AuthFromSecret builds credentials from a Secret's data: username+password
// or bearerToken for HTTPS, identity+known_hosts (and password when the key
// is encrypted) for SSH, and ca.crt to trust a private CA. Errors name the
// Secret and the key at fault; secretName serves only that purpose.
func AuthFromSecret(secretName string, data map[string][]byte) (*Auth, error) {
	a := &Auth{secret: secretName}
	if ca := data[KeyCA]; len(ca) > 0 {
		if !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return nil, a.keyErr(KeyCA, "no valid PEM certificate (want one or more -----BEGIN CERTIFICATE----- blocks)")
		}
		a.caBundle = ca
	}
	has := func(k string) bool { return len(data[k]) > 0 }
	switch {
	case has(KeyIdentity):
		if err := a.setSSH(data); err != nil {
			return nil, err
		}
	case has(KeyBearerToken):
		if has(KeyUsername) {
			return nil, a.keyErr(KeyBearerToken, "set either bearerToken or username and password, not both")
		}
		a.bearer = strings.TrimSpace(string(data[KeyBearerToken]))
	case has(KeyUsername) && has(KeyPassword):
		a.username, a.password = string(data[KeyUsername]), string(data[KeyPassword])
	case has(KeyUsername):
		return nil, a.keyErr(KeyPassword, "missing: username is set, so HTTPS basic auth needs a password too")
	case has(KeyPassword):
		return nil, a.keyErr(KeyUsername, "missing: password is set without username or identity")
	case a.caBundle == nil:
		return nil, fmt.Errorf("secret %q has no git credentials: set username and password, bearerToken, or identity and known_hosts", secretName)
	}
	return a, nil
}

func (a *Auth) keyErr(key, problem string) error {
	return fmt.Errorf("secret %q, key %q: %s", a.secret, key, problem)
}

func (a *Auth) setSSH(data map[string][]byte) error {
	key, pass := data[KeyIdentity], data[KeyPassword]
	signer, err := ssh.ParsePrivateKey(key)
	var encrypted *ssh.PassphraseMissingError
	if errors.As(err, &encrypted) {
		if len(pass) == 0 {
			return a.keyErr(KeyIdentity, `the private key is encrypted: put its passphrase under key "password"`)
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(key, pass)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return a.keyErr(KeyPassword, `wrong passphrase: it does not decrypt the private key in key "identity"`)
		}
	}
	if err != nil {
		return a.keyErr(KeyIdentity, fmt.Sprintf("not a usable SSH private key (PEM or OpenSSH format): %v", err))
	}
	a.signer = signer
	hosts, err := parseKnownHosts(data[KeyKnownHosts])
	if err != nil {
		return a.keyErr(KeyKnownHosts, err.Error())
	}
	a.hosts = hosts
	return nil
}

// parseKnownHosts checks every line, so a typo is reported with its line
// number, then loads the lines into a host key database. That database only
// reads files, hence the short-lived temporary file (host keys are public).
func parseKnownHosts(data []byte) (*knownhosts.HostKeyDB, error) {
	entries := 0
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts([]byte(line)); err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		entries++
	}
	if entries == 0 {
		return nil, errors.New("missing or empty: SSH host keys are always verified; add the output of ssh-keyscan for the git host")
	}
	f, err := os.CreateTemp("", "alumiini-known-hosts-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return knownhosts.NewDB(f.Name())
}

// method picks go-git's credentials for r, refusing credentials of the wrong
// kind for the URL. deadline bounds the SSH dial (go-git dials without the
// context).
func (a *Auth) method(r remote, deadline time.Time) (transport.AuthMethod, error) {
	switch r.kind {
	case "ssh":
		if a == nil {
			return nil, fmt.Errorf("%s is an SSH URL: set spec.secretRef to a Secret with keys identity and known_hosts", r.display)
		}
		if a.signer == nil {
			return nil, a.keyErr(KeyIdentity, "missing: "+r.display+" is an SSH URL, which needs identity and known_hosts")
		}
		var timeout time.Duration
		if !deadline.IsZero() {
			timeout = max(time.Until(deadline), time.Millisecond)
		}
		return &sshKeyAuth{user: r.user, signer: a.signer, hosts: a.hosts, host: r.host, timeout: timeout}, nil
	case "http":
		switch {
		case a != nil && a.signer != nil:
			return nil, a.keyErr(KeyIdentity, "an SSH key cannot authenticate to "+r.display+": use an ssh:// or git@host:org/repo.git URL, or give username and password")
		case a != nil && a.bearer != "":
			return &githttp.TokenAuth{Token: a.bearer}, nil
		case a != nil && a.username != "":
			return &githttp.BasicAuth{Username: a.username, Password: a.password}, nil
		case r.user != "":
			return &githttp.BasicAuth{Username: r.user, Password: r.pass}, nil
		}
	}
	return nil, nil
}

func (a *Auth) ca() []byte {
	if a == nil {
		return nil
	}
	return a.caBundle
}

// String names the credentials' Secret, never their contents (so do %v and %#v).
func (a *Auth) String() string {
	if a == nil {
		return "no Secret (spec.secretRef is unset)"
	}
	return fmt.Sprintf("secret %q", a.secret)
}

func (a *Auth) GoString() string { return a.String() }

// sshKeyAuth is go-git's SSH public key auth with our host key database,
// which also picks the host key algorithms known_hosts has keys for (so a
// server offering several key types is checked against the one we trust).
type sshKeyAuth struct {
	user    string
	signer  ssh.Signer
	hosts   *knownhosts.HostKeyDB
	host    string
	timeout time.Duration
}

func (s *sshKeyAuth) Name() string   { return gitssh.PublicKeysName }
func (s *sshKeyAuth) String() string { return "user: " + s.user + ", name: " + s.Name() }

func (s *sshKeyAuth) ClientConfig() (*ssh.ClientConfig, error) {
	return &ssh.ClientConfig{
		User:              s.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(s.signer)},
		HostKeyCallback:   s.hosts.HostKeyCallback(),
		HostKeyAlgorithms: s.hosts.HostKeyAlgorithms(s.host),
		Timeout:           s.timeout,
	}, nil
}
