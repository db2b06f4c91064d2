// Package sopstest encrypts YAML documents the way the sops command does,
// in memory, so tests need neither the sops nor the gpg binary.
package sopstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"filippo.io/age"
	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	sopsapi "github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/pgp"
	dotenvstore "github.com/getsops/sops/v3/stores/dotenv"
	jsonstore "github.com/getsops/sops/v3/stores/json"
	yamlstore "github.com/getsops/sops/v3/stores/yaml"
)

// Keys are a fresh age identity and PGP key pair, with the Secret entries
// (key.agekey, key.asc) that hold their private halves.
type Keys struct {
	Age     *age.X25519Identity
	PGP     *openpgp.Entity
	AgeFile []byte
	PGPFile []byte
}

// NewKeys generates a fresh age identity and PGP key.
func NewKeys() (*Keys, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	ent, err := openpgp.NewEntity("sops test", "", "sops@example.test", nil)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := ent.SerializePrivate(w, nil); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	ageFile := fmt.Sprintf("# public key: %s\n%s\n", id.Recipient(), id)
	return &Keys{Age: id, PGP: ent, AgeFile: []byte(ageFile), PGPFile: buf.Bytes()}, nil
}

// Encrypt encrypts a YAML document for the age recipient and, when usePGP
// is set, also for the PGP key (either then decrypts it). encryptedRegex,
// when not empty, limits encryption to matching keys as sops'
// --encrypted-regex does.
func (k *Keys) Encrypt(plain []byte, usePGP bool, encryptedRegex string) ([]byte, error) {
	return k.encrypt(yamlstore.NewStore(&config.YAMLStoreConfig{}), plain, usePGP, encryptedRegex)
}

// EncryptJSON is Encrypt for a JSON document, as sops encrypts a .json file.
func (k *Keys) EncryptJSON(plain []byte, usePGP bool, encryptedRegex string) ([]byte, error) {
	return k.encrypt(jsonstore.NewStore(&config.JSONStoreConfig{}), plain, usePGP, encryptedRegex)
}

// EncryptDotenv encrypts KEY=value lines as sops encrypts a .env file.
func (k *Keys) EncryptDotenv(plain []byte) ([]byte, error) {
	return k.encrypt(dotenvstore.NewStore(&config.DotenvStoreConfig{}), plain, false, "")
}

// EncryptBinary encrypts any file whole, as sops --input-type binary does.
func (k *Keys) EncryptBinary(plain []byte) ([]byte, error) {
	return k.encrypt(jsonstore.NewBinaryStore(&config.JSONBinaryStoreConfig{}), plain, false, "")
}

// sopsStore is the part of a sops store that encryption needs.
type sopsStore interface {
	LoadPlainFile(data []byte) (sopsapi.TreeBranches, error)
	EmitEncryptedFile(tree sopsapi.Tree) ([]byte, error)
}

func (k *Keys) encrypt(store sopsStore, plain []byte, usePGP bool, encryptedRegex string) ([]byte, error) {
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		return nil, err
	}
	dataKey := make([]byte, 32)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, err
	}
	group, err := k.masterKeys(dataKey, usePGP)
	if err != nil {
		return nil, err
	}
	tree := sopsapi.Tree{Branches: branches, Metadata: sopsapi.Metadata{
		KeyGroups:      []sopsapi.KeyGroup{group},
		EncryptedRegex: encryptedRegex,
		LastModified:   time.Now().UTC(),
		Version:        "3.13.3",
	}}
	if encryptedRegex == "" {
		tree.Metadata.UnencryptedSuffix = sopsapi.DefaultUnencryptedSuffix
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		return nil, err
	}
	tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, err
	}
	return store.EmitEncryptedFile(tree)
}

func (k *Keys) masterKeys(dataKey []byte, usePGP bool) ([]keys.MasterKey, error) {
	ak, err := sopsage.MasterKeyFromRecipient(k.Age.Recipient().String())
	if err != nil {
		return nil, err
	}
	if err := ak.Encrypt(dataKey); err != nil {
		return nil, err
	}
	group := []keys.MasterKey{ak}
	if !usePGP {
		return group, nil
	}
	var buf bytes.Buffer
	aw, err := armor.Encode(&buf, "PGP MESSAGE", nil)
	if err != nil {
		return nil, err
	}
	pw, err := openpgp.Encrypt(aw, []*openpgp.Entity{k.PGP}, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := pw.Write(dataKey); err != nil {
		return nil, err
	}
	if err := pw.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	pk := pgp.NewMasterKeyFromFingerprint(hex.EncodeToString(k.PGP.PrimaryKey.Fingerprint))
	pk.EncryptedKey = buf.String()
	return append(group, pk), nil
}
