// Package sops decrypts SOPS-encrypted manifests in memory. Keys come from
// the entries of a Kubernetes Secret (age identities in *.agekey entries,
// armored PGP private keys in *.asc entries); nothing is written to disk and
// no gpg binary is run. The data key is recovered through sops' own key
// group logic (so Shamir key groups work) by an in-process key service that
// knows only these keys, and the document's MAC is verified as sops does.
package sops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	agearmor "filippo.io/age/armor"
	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/getsops/sops/v3/aes"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keyservice"
	dotenvstore "github.com/getsops/sops/v3/stores/dotenv"
	jsonstore "github.com/getsops/sops/v3/stores/json"
	yamlstore "github.com/getsops/sops/v3/stores/yaml"
	"google.golang.org/grpc"
	"sigs.k8s.io/yaml"

	sopsapi "github.com/getsops/sops/v3"
)

// Decryptor decrypts SOPS documents with the keys of one Secret.
type Decryptor struct {
	ages []age.Identity
	pgp  openpgp.EntityList
}

// New builds a Decryptor from a Secret's data. Entries ending in .agekey
// hold age identities (age-keygen output, comments allowed); entries ending
// in .asc hold armored PGP private keys. Other entries are ignored.
func New(data map[string][]byte) (*Decryptor, error) {
	d := &Decryptor{}
	names := make([]string, 0, len(data))
	for name := range data {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, ".agekey"):
			ids, err := age.ParseIdentities(bytes.NewReader(data[name]))
			if err != nil {
				return nil, fmt.Errorf("entry %s: not age identities: %w", name, err)
			}
			d.ages = append(d.ages, ids...)
		case strings.HasSuffix(name, ".asc"):
			ents, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data[name]))
			if err != nil {
				return nil, fmt.Errorf("entry %s: not an armored PGP key: %w", name, err)
			}
			d.pgp = append(d.pgp, ents...)
		}
	}
	if len(d.ages) == 0 && len(d.pgp) == 0 {
		return nil, errors.New("no decryption keys: the Secret needs entries named *.agekey (age identities) or *.asc (armored PGP private keys)")
	}
	return d, nil
}

// Format is how a SOPS file is laid out, as sops' --input-type says.
type Format int

const (
	YAML   Format = iota
	JSON          // a JSON document
	Dotenv        // KEY=value lines (a kustomize secretGenerator's envs)
	Binary        // any file, encrypted whole into {"data": …, "sops": …}
)

// FormatOf picks the format from a file name as sops does: .yaml/.yml,
// .json, .env, anything else binary.
func FormatOf(name string) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return YAML
	case ".json":
		return JSON
	case ".env":
		return Dotenv
	}
	return Binary
}

// IsEncrypted reports whether a YAML or JSON document carries SOPS
// metadata: a top-level sops mapping with a mac.
func IsEncrypted(data []byte) bool {
	// Most manifests are plain: skip the YAML decode when the words that
	// a SOPS document must hold are absent.
	if !bytes.Contains(data, []byte("sops")) || !bytes.Contains(data, []byte("mac")) {
		return false
	}
	var doc struct {
		Sops *struct {
			MAC string `json:"mac"`
		} `json:"sops"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return false
	}
	return doc.Sops != nil && doc.Sops.MAC != ""
}

// IsEncryptedAs is IsEncrypted for a file of format f: a dotenv file
// carries its metadata in sops_* lines; a binary one is a JSON document.
func IsEncryptedAs(data []byte, f Format) bool {
	if f == Dotenv {
		return bytes.HasPrefix(data, []byte("sops_mac=")) || bytes.Contains(data, []byte("\nsops_mac="))
	}
	return IsEncrypted(data)
}

// Decrypt returns the plaintext of a SOPS document; json selects the JSON
// store, otherwise YAML. Errors never include decrypted values.
func (d *Decryptor) Decrypt(data []byte, json bool) ([]byte, error) {
	if json {
		return d.DecryptAs(data, JSON)
	}
	return d.DecryptAs(data, YAML)
}

// DecryptAs returns the plaintext of a SOPS file of format f: for Binary,
// the original file's bytes. Errors never include decrypted values.
func (d *Decryptor) DecryptAs(data []byte, f Format) ([]byte, error) {
	format := storeFor(f)
	tree, err := format.LoadEncryptedFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading SOPS metadata: %w", err)
	}
	key, err := tree.Metadata.GetDataKeyWithKeyServices([]keyservice.KeyServiceClient{keyClient{d}}, nil)
	if err != nil {
		return nil, fmt.Errorf("no key in spec.decryption's Secret decrypts the data key: %w", err)
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(key, cipher)
	if err != nil {
		return nil, fmt.Errorf("decrypting values: %w", err)
	}
	want, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("decrypting the MAC: %w", err)
	}
	if want != mac {
		return nil, errors.New("MAC mismatch: the file was changed after it was encrypted; re-encrypt it with sops")
	}
	out, err := format.EmitPlainFile(tree.Branches)
	if err != nil {
		return nil, fmt.Errorf("writing plaintext: %w", err)
	}
	return out, nil
}

// store is the part of a sops store that decryption needs.
type store interface {
	LoadEncryptedFile(data []byte) (sopsapi.Tree, error)
	EmitPlainFile(branches sopsapi.TreeBranches) ([]byte, error)
}

func storeFor(f Format) store {
	switch f {
	case JSON:
		return jsonstore.NewStore(&config.JSONStoreConfig{})
	case Dotenv:
		return dotenvstore.NewStore(&config.DotenvStoreConfig{})
	case Binary:
		return jsonstore.NewBinaryStore(&config.JSONBinaryStoreConfig{})
	}
	return yamlstore.NewStore(&config.YAMLStoreConfig{})
}

// keyClient is an in-process sops key service holding only the Decryptor's
// keys; it can decrypt data keys but never encrypts.
type keyClient struct{ d *Decryptor }

func (k keyClient) Encrypt(context.Context, *keyservice.EncryptRequest, ...grpc.CallOption) (*keyservice.EncryptResponse, error) {
	return nil, errors.New("the in-memory key service only decrypts")
}

func (k keyClient) Decrypt(_ context.Context, req *keyservice.DecryptRequest, _ ...grpc.CallOption) (*keyservice.DecryptResponse, error) {
	var plain []byte
	var err error
	switch {
	case req.GetKey().GetAgeKey() != nil:
		plain, err = k.d.decryptAge(req.Ciphertext)
	case req.GetKey().GetPgpKey() != nil:
		plain, err = k.d.decryptPGP(req.Ciphertext)
	default:
		err = errors.New("key type not supported: only age and PGP keys can be given in spec.decryption")
	}
	if err != nil {
		return nil, err
	}
	return &keyservice.DecryptResponse{Plaintext: plain}, nil
}

func (d *Decryptor) decryptAge(ciphertext []byte) ([]byte, error) {
	if len(d.ages) == 0 {
		return nil, errors.New("the Secret has no *.agekey entry")
	}
	r, err := age.Decrypt(agearmor.NewReader(bytes.NewReader(ciphertext)), d.ages...)
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	return io.ReadAll(r)
}

func (d *Decryptor) decryptPGP(ciphertext []byte) ([]byte, error) {
	if len(d.pgp) == 0 {
		return nil, errors.New("the Secret has no *.asc entry")
	}
	block, err := armor.Decode(bytes.NewReader(ciphertext))
	if err != nil {
		return nil, fmt.Errorf("pgp: reading the armored data key: %w", err)
	}
	md, err := openpgp.ReadMessage(block.Body, d.pgp, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("pgp: %w", err)
	}
	return io.ReadAll(md.UnverifiedBody)
}
