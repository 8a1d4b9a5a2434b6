package models

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"ledge/internal/fault"
)

// diskReserve is left free on the file system beyond a download's bytes.
const diskReserve = 32 << 20

// recency orders versions: the last time each was activated, became
// ready or was recorded.
func recency(v Version) time.Time {
	t := v.CreatedAt
	if v.ReadyAt.After(t) {
		t = v.ReadyAt
	}
	if v.ActivatedAt.After(t) {
		t = v.ActivatedAt
	}
	return t
}

// collectLogged runs collectLocked under actMu, logging failures.
func (s *Store) collectLogged(ctx context.Context) {
	s.actMu.Lock()
	defer s.actMu.Unlock()
	if err := s.collectLocked(context.WithoutCancel(ctx)); err != nil {
		s.log.Warn("model store: collect", "err", err)
	}
}

// collectLocked keeps, per name, the active and the desired version, the
// versions in transfer, and the newest of the others up to Keep in all
// (ready ones and failed ones counted apart); it deletes the rest and the
// files nothing refers to any more. Called with actMu held.
func (s *Store) collectLocked(ctx context.Context) error {
	names, err := s.names(ctx)
	if err != nil {
		return err
	}
	all, err := s.versions(ctx, "")
	if err != nil {
		return err
	}
	byName := map[string][]Version{}
	for _, v := range all {
		byName[v.Name] = append(byName[v.Name], v)
	}
	s.mu.Lock()
	activating := map[string]string{}
	for k, v := range s.activating {
		activating[k] = v
	}
	s.mu.Unlock()
	removed := 0
	for name, vs := range byName {
		r := names[name]
		pinned := map[string]bool{activating[name]: true}
		if r != nil {
			pinned[r.active], pinned[r.desired] = true, true
		}
		slices.SortFunc(vs, func(a, b Version) int { return recency(b).Compare(recency(a)) })
		keptReady, keptFailed := 0, 0
		for _, v := range vs {
			if pinned[v.Version] && (v.State == StateReady || v.State == StateFailed) {
				keptReady++
			}
		}
		for _, v := range vs {
			var keep bool
			switch {
			case pinned[v.Version]:
				keep = true
			case v.State == StateQueued || v.State == StateDownloading || v.State == StateVerifying:
				keep = true
			case v.State == StateFailed:
				keptFailed++
				keep = keptFailed <= s.cfg.Keep
			default:
				keptReady++
				keep = keptReady <= s.cfg.Keep
			}
			if keep {
				continue
			}
			if err := s.deleteVersion(ctx, v.Name, v.Version); err != nil {
				return err
			}
			removed++
			s.stats.collected.Add(1)
			s.publishState(v.Name, v.Version, StateRemoved, "")
			s.log.Info("model version collected", "model", v.Name, "version", v.Version)
		}
		if err := s.deleteName(ctx, name); err != nil {
			return err
		}
	}
	if err := s.removeStrays(ctx); err != nil {
		return err
	}
	if removed > 0 {
		return s.refresh(ctx)
	}
	return nil
}

// makeRoom makes sure need more bytes fit in the quota and on the disk,
// evicting ready versions nothing needs (neither active nor desired),
// oldest first, even below Keep. exclude is the digest being downloaded.
func (s *Store) makeRoom(ctx context.Context, need int64, exclude string) error {
	s.actMu.Lock()
	defer s.actMu.Unlock()
	for {
		used, err := s.usage()
		if err != nil {
			return err
		}
		if used+need <= s.cfg.QuotaBytes {
			break
		}
		v, ok, err := s.evictable(ctx, exclude)
		if err != nil {
			return err
		}
		if !ok {
			return fault.New(fault.TooLarge, "no room in the model store: %d more bytes would make %d, over models.quotaBytes %d, and every stored version is active or desired",
				need, used+need, s.cfg.QuotaBytes)
		}
		if err := s.deleteVersion(ctx, v.Name, v.Version); err != nil {
			return err
		}
		s.stats.collected.Add(1)
		s.publishState(v.Name, v.Version, StateRemoved, "")
		s.log.Info("model version evicted to stay within the quota", "model", v.Name, "version", v.Version, "bytes", v.Size)
		if err := s.removeStrays(ctx); err != nil {
			return err
		}
		s.refreshLogged(ctx)
	}
	free, err := s.freeBytes()
	if err == nil && free < need+diskReserve {
		return fault.New(fault.TooLarge, "not enough disk space for the model: it needs %d bytes and %d MiB are kept free beside it (for ledge's databases and logs), %d free on %s",
			need, diskReserve>>20, free, s.dir)
	}
	return nil
}

// evictable returns the oldest ready or failed version that is neither
// active, desired nor being activated, and whose digest is not exclude.
func (s *Store) evictable(ctx context.Context, exclude string) (Version, bool, error) {
	names, err := s.names(ctx)
	if err != nil {
		return Version{}, false, err
	}
	all, err := s.versions(ctx, "")
	if err != nil {
		return Version{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var cands []Version
	for _, v := range all {
		r := names[v.Name]
		if v.State != StateReady && v.State != StateFailed || v.Digest == exclude || s.activating[v.Name] == v.Version {
			continue
		}
		if r != nil && (r.active == v.Version || r.desired == v.Version) {
			continue
		}
		cands = append(cands, v)
	}
	if len(cands) == 0 {
		return Version{}, false, nil
	}
	slices.SortFunc(cands, func(a, b Version) int { return recency(a).Compare(recency(b)) })
	return cands[0], true, nil
}

func removeBlob(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
