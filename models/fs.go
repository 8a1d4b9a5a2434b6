package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The store's directory (<dataDir>/models):
//
//	blobs/<sha256 hex>            verified model files, read-only
//	partial/<sha256 hex>          transfers in progress (never read as models)
//	partial/<sha256 hex>.json     what a resume needs (URL, ETag, Last-Modified)
//
// File names come only from validated digests, never from model names or
// versions, so nothing a manifest says can point outside the store.

const (
	blobDir    = "blobs"
	partialDir = "partial"
)

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.dir, blobDir, mustDigest(digest))
}

func (s *Store) partialPath(digest string) string {
	return filepath.Join(s.dir, partialDir, mustDigest(digest))
}

// mustDigest guards the paths: a digest is checked when it enters the
// store, so anything else here is a bug.
func mustDigest(d string) string {
	if n, err := normalizeDigest(d); err != nil || n != d {
		panic(fmt.Sprintf("models: not a digest: %q", d))
	}
	return d
}

func (s *Store) makeDirs() error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, blobDir), filepath.Join(s.dir, partialDir)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("model store: %w", err)
		}
	}
	return nil
}

// resumeInfo is kept beside a partial file.
type resumeInfo struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
	Total        int64  `json:"total,omitempty"`
}

func (s *Store) readResume(digest string) resumeInfo {
	var ri resumeInfo
	data, err := os.ReadFile(s.partialPath(digest) + ".json")
	if err == nil {
		json.Unmarshal(data, &ri)
	}
	return ri
}

func (s *Store) writeResume(digest string, ri resumeInfo) {
	data, _ := json.Marshal(ri)
	os.WriteFile(s.partialPath(digest)+".json", data, 0o640)
}

func (s *Store) removePartial(digest string) {
	os.Remove(s.partialPath(digest))
	os.Remove(s.partialPath(digest) + ".json")
}

// publish moves a verified partial file into blobs/ under its digest,
// durably: the file is synced, renamed, and the directory synced, so a
// version recorded ready always has its file.
func (s *Store) publish(digest string, f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", digest, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("chmod %s: %w", digest, err)
	}
	if err := os.Rename(f.Name(), s.blobPath(digest)); err != nil {
		return fmt.Errorf("store %s: %w", digest, err)
	}
	os.Remove(s.partialPath(digest) + ".json")
	return syncDir(filepath.Join(s.dir, blobDir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func (s *Store) hasBlob(digest string) bool {
	st, err := os.Stat(s.blobPath(digest))
	return err == nil && st.Mode().IsRegular()
}

// diskFiles lists the digests of blobs and partials on disk with their
// sizes, removing anything else found there (temp files of a crashed
// ledge).
func (s *Store) diskFiles() (blobs, partials map[string]int64, err error) {
	blobs, err = s.scanDir(blobDir, "")
	if err != nil {
		return nil, nil, err
	}
	partials, err = s.scanDir(partialDir, ".json")
	return blobs, partials, err
}

func (s *Store) scanDir(sub, sidecar string) (map[string]int64, error) {
	dir := filepath.Join(s.dir, sub)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model store: %w", err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		name := e.Name()
		base := name
		if sidecar != "" {
			base = strings.TrimSuffix(name, sidecar)
		}
		if d, err := normalizeDigest(base); err != nil || d != base || !e.Type().IsRegular() {
			s.log.Warn("removing a stray file from the model store", "file", filepath.Join(dir, name))
			os.RemoveAll(filepath.Join(dir, name))
			continue
		}
		if base != name {
			continue // a sidecar
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		out[name] = info.Size()
	}
	return out, nil
}

// usage is the bytes the store holds on disk (blobs and partials).
func (s *Store) usage() (int64, error) {
	blobs, partials, err := s.diskFiles()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, sz := range blobs {
		n += sz
	}
	for _, sz := range partials {
		n += sz
	}
	return n, nil
}

// freeBytes is the space left on the store's file system for ledge.
func (s *Store) freeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
