package gitsrc

import (
	"bytes"
	"io"
	"os"
	"strings"

	"github.com/go-git/go-billy/v5"
)

// wholeIdx is the filesystem of an object store, with each pack index
// (.idx) read whole in one go when it is opened. go-git decodes an index
// with many small reads (its fanout table alone is 256 reads of four
// bytes), each a system call on an os file, and reloads every index each
// time a store is opened, which one Fetch does several times. With tens of
// packs in a source's store (one per fetch, up to maxPacks) that was most
// of a push's fetch: 140 ms (BenchmarkPushedCommit).
type wholeIdx struct{ billy.Filesystem }

func (fs wholeIdx) Open(name string) (billy.File, error) {
	f, err := fs.Filesystem.Open(name)
	if err != nil || !strings.HasSuffix(name, ".idx") {
		return f, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return &memFile{name: f.Name(), Reader: bytes.NewReader(data)}, nil
}

// Chmod keeps the wrapped filesystem's: go-git makes the packs and
// objects it writes read-only through it.
func (fs wholeIdx) Chmod(name string, mode os.FileMode) error {
	if c, ok := fs.Filesystem.(billy.Chmod); ok {
		return c.Chmod(name, mode)
	}
	return nil
}

// memFile is a read-only billy.File over bytes already read.
type memFile struct {
	name string
	*bytes.Reader
}

func (f *memFile) Name() string              { return f.name }
func (f *memFile) Write([]byte) (int, error) { return 0, os.ErrPermission }
func (f *memFile) Truncate(int64) error      { return os.ErrPermission }
func (f *memFile) Close() error              { return nil }
func (f *memFile) Lock() error               { return nil }
func (f *memFile) Unlock() error             { return nil }
