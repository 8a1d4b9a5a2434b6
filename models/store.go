package models

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"ledge/internal/fault"
	"ledge/internal/migrate"
)

// Options are what a store is opened with; appliance fills them in.
type Options struct {
	Config Config
	DB     *sql.DB
	// Dir holds the files (<dataDir>/models).
	Dir string
	// DataDir is ledge's data dir, where file:// sources may always be
	// read (default: the folder above Dir).
	DataDir string
	Logger  *slog.Logger
	// TrustedKeys verify model signatures (the agent's trusted keys).
	TrustedKeys []TrustedKey
	// Kinds are the model kinds the runtime knows (inference.Kinds); a
	// model of another kind is refused. nil: any.
	Kinds []string
	// TLS configures https downloads (nil: the system's roots).
	TLS *tls.Config
	// Activator prepares a version before it becomes active and switches
	// its users once it is; nil activates without a check. It may also be set later with
	// SetActivator, before Run.
	Activator Activator
}

// Store is the model store. Its methods are safe for concurrent use.
//
// The database is the truth; a snapshot of it (names, versions, what is
// active) is kept behind an atomic pointer for Resolve and Report, and
// rebuilt after every change. Downloads run in goroutines started by Run's
// scheduler (at most Download.Concurrency, one per digest); activations
// are serialised by actMu.
type Store struct {
	cfg    Config
	db     *sql.DB
	dir    string
	log    *slog.Logger
	keys   []TrustedKey
	kinds  []string
	client *http.Client
	roots  []string // where file:// sources may be read
	// importDir is the drop folder (ImportDir), emptied as it is stored.
	importDir string

	activator atomic.Pointer[Activator]
	regAuth   atomic.Pointer[RegistryAuth] // oci:// credentials (oci.go)
	tlsConf   *tls.Config                  // oci:// registries' TLS (nil: system roots)
	snap      atomic.Pointer[snapshot]
	bus       eventBus
	stats     counters
	wake      chan struct{}

	// actMu serialises activations, desired-state changes and collection.
	actMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// transfers are the downloads in progress, by digest.
	transfers map[string]*transfer
	// activating is the version being loaded per name.
	activating map[string]string
	// activateWhenReady holds name@version pulled with "activate".
	activateWhenReady map[string]bool
	runCtx            context.Context // set while Run runs
	stopping          bool            // Run is waiting for its goroutines
	wg                sync.WaitGroup  // downloads and background activations
	snapMu            sync.Mutex      // serialises snapshot rebuilds
}

// counters are the store's statistics.
type counters struct {
	started, completed, failed atomic.Int64
	bytes                      atomic.Int64
	activations, activateFails atomic.Int64
	collected                  atomic.Int64
}

// Stats are the store's counters since it was opened.
type Stats struct {
	DownloadsStarted   int64 `json:"downloadsStarted"`
	DownloadsCompleted int64 `json:"downloadsCompleted"`
	DownloadsFailed    int64 `json:"downloadsFailed"`
	DownloadedBytes    int64 `json:"downloadedBytes"`
	Activations        int64 `json:"activations"`
	ActivationFailures int64 `json:"activationFailures"`
	Collected          int64 `json:"collected"`
	EventsDropped      int64 `json:"eventsDropped"`
	// StoredBytes are the bytes of stored files and partial downloads.
	StoredBytes int64 `json:"storedBytes"`
	QuotaBytes  int64 `json:"quotaBytes"`
	Names       int   `json:"names"`
	Versions    int   `json:"versions"`
}

// Open opens the store: it creates its directory and tables, forgets
// transfers a stopped ledge left running (they resume in Run), and
// removes files nothing refers to. It downloads nothing until Run.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.DB == nil || opts.Dir == "" {
		return nil, errors.New("model store: a database and a directory are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TLS == nil && opts.Config.CAFile != "" {
		var err error
		if opts.TLS, err = tlsWithCA(opts.Config.CAFile); err != nil { // oci.go
			return nil, err
		}
	}
	s := &Store{cfg: opts.Config, db: opts.DB, dir: opts.Dir, log: opts.Logger, keys: opts.TrustedKeys,
		kinds: opts.Kinds, client: newHTTPClient(opts.Config, opts.TLS), tlsConf: opts.TLS, wake: make(chan struct{}, 1),
		transfers: map[string]*transfer{}, activating: map[string]string{}, activateWhenReady: map[string]bool{}}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Dir(filepath.Clean(opts.Dir))
	}
	if abs, err := filepath.Abs(opts.DataDir); err == nil {
		opts.DataDir = abs
	}
	s.roots = fileRoots(opts.Config, opts.DataDir)
	s.importDir = ImportDir(opts.DataDir)
	if opts.Activator != nil {
		s.SetActivator(opts.Activator)
	}
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	if err := migrate.Apply(ctx, s.db, "models", migrations); err != nil {
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		return nil, err
	}
	if err := s.loadActivateWhenReady(ctx); err != nil {
		return nil, err
	}
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// SetActivator sets what loads and warms versions before they become
// active (the pipeline engine, which is built after the store because it
// resolves names through it).
func (s *Store) SetActivator(a Activator) { s.activator.Store(&a) }

// recover makes the database and the files agree after a stop or crash:
// transfers in progress go back to the queue (they resume from their
// partial files), a ready version whose file is gone goes back to the
// queue, and files nothing refers to are removed.
func (s *Store) recover(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE models_versions SET state = ? WHERE state IN (?, ?)`,
		StateQueued, StateDownloading, StateVerifying); err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	vs, err := s.versions(ctx, "")
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v.State == StateReady && !s.hasBlob(v.Digest) {
			s.log.Warn("model file missing from the store: downloading it again", "model", v.Name, "version", v.Version)
			if err := s.setState(ctx, v.Name, v.Version, StateQueued, ""); err != nil {
				return err
			}
		}
	}
	return s.removeStrays(ctx)
}

// removeStrays deletes blobs and partials no version refers to.
func (s *Store) removeStrays(ctx context.Context) error {
	vs, err := s.versions(ctx, "")
	if err != nil {
		return err
	}
	wantBlob, wantPartial := map[string]bool{}, map[string]bool{}
	for _, v := range vs {
		switch v.State {
		case StateReady, StateFailed:
			wantBlob[v.Digest] = true
		case StateQueued, StateDownloading, StateVerifying:
			wantPartial[v.Digest] = true
		}
	}
	blobs, partials, err := s.diskFiles()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for d := range blobs {
		if !wantBlob[d] && !wantPartial[d] {
			if err := removeBlob(s.blobPath(d)); err != nil {
				return err
			}
		}
	}
	for d := range partials {
		if !wantPartial[d] && s.transfers[d] == nil {
			s.removePartial(d)
		}
	}
	return nil
}

// Run downloads what is queued (resuming broken transfers) and activates
// what the deployment asks for once it is ready, until ctx ends; then it
// waits for its goroutines. Partial files stay for the next Run.
func (s *Store) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("model store: Run called twice")
	}
	s.runCtx = ctx
	s.mu.Unlock()
	s.activatePending(ctx)
	s.schedule(ctx)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.stopping = true
			s.mu.Unlock()
			s.wg.Wait()
			s.client.CloseIdleConnections()
			return nil
		case <-s.wake:
			s.schedule(ctx)
		case <-tick.C:
			s.schedule(ctx)
		}
	}
}

// kick wakes the scheduler.
func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// background runs f in a goroutine Run waits for; before Run, or after
// it ended, f is not run and false is returned.
func (s *Store) background(f func(ctx context.Context)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := s.runCtx
	if ctx == nil || s.stopping {
		return false
	}
	s.wg.Go(func() { f(ctx) })
	return true
}

// schedule starts downloads for queued versions, one per digest, up to
// the concurrency limit.
func (s *Store) schedule(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	queued, err := s.queryVersions(ctx, `SELECT `+versionCols+` FROM models_versions WHERE state = ? ORDER BY created_at`, StateQueued)
	if err != nil {
		s.log.Error("model store: list queued downloads", "err", err)
		return
	}
	for _, v := range queued {
		if s.hasBlob(v.Digest) {
			// Another version brought the same bytes.
			s.finishReady(ctx, v.Digest)
			s.consumeImportURL(v.URL)
			continue
		}
		s.mu.Lock()
		_, busy := s.transfers[v.Digest]
		full := len(s.transfers) >= s.cfg.Download.Concurrency
		var t *transfer
		if !busy && !full {
			t = &transfer{digest: v.Digest, url: v.URL, size: v.Size, name: v.Name, ver: v.Version}
			t.p.Percent = -1
			s.transfers[v.Digest] = t
			s.wg.Go(func() { s.download(ctx, t) })
		}
		s.mu.Unlock()
		if full {
			return
		}
	}
}

// download runs one transfer and records its outcome for every version
// that shares its digest.
func (s *Store) download(ctx context.Context, t *transfer) {
	defer func() {
		s.mu.Lock()
		delete(s.transfers, t.digest)
		s.mu.Unlock()
		s.kick()
	}()
	s.stats.started.Add(1)
	s.setDigestState(ctx, t.digest, StateDownloading, "")
	s.log.Info("downloading model", "model", t.name, "version", t.ver, "url", redactString(t.url), "digest", t.digest)
	start := time.Now()
	err := s.fetch(ctx, t)
	if ctx.Err() != nil {
		return // stopped: resumes at the next Run
	}
	if err != nil {
		s.stats.failed.Add(1)
		s.log.Warn("model download failed", "model", t.name, "version", t.ver, "err", err)
		s.removePartial(t.digest)
		s.setDigestState(ctx, t.digest, StateFailed, "download: "+err.Error())
		return
	}
	s.stats.completed.Add(1)
	p := t.progress()
	s.log.Info("model downloaded and verified", "model", t.name, "version", t.ver, "bytes", p.Bytes,
		"took", time.Since(start).Round(time.Millisecond), "attempts", p.Attempt)
	s.finishReady(ctx, t.digest)
}

// finishReady marks the waiting versions of digest ready and activates
// those the deployment (or a pull with activate) asks for.
func (s *Store) finishReady(ctx context.Context, digest string) {
	vs, err := s.digestVersions(ctx, digest, StateQueued, StateDownloading, StateVerifying)
	if err != nil {
		s.log.Error("model store", "err", err)
		return
	}
	var size int64
	if st, err := os.Stat(s.blobPath(digest)); err == nil {
		size = st.Size()
	}
	for _, v := range vs {
		if err := s.setReady(ctx, v.Name, v.Version, size); err != nil {
			s.log.Error("model store", "err", err)
			continue
		}
		s.publishState(v.Name, v.Version, StateReady, "")
	}
	s.refreshLogged(ctx)
	s.activatePending(ctx)
	s.collectLogged(ctx)
}

// setDigestState moves the versions of digest that wait for its transfer
// to st.
func (s *Store) setDigestState(ctx context.Context, digest string, st State, msg string) {
	vs, err := s.digestVersions(ctx, digest, StateQueued, StateDownloading, StateVerifying)
	if err != nil {
		s.log.Error("model store", "err", err)
		return
	}
	for _, v := range vs {
		if err := s.setState(context.WithoutCancel(ctx), v.Name, v.Version, st, msg); err != nil {
			s.log.Error("model store", "err", err)
			continue
		}
		s.publishState(v.Name, v.Version, st, msg)
	}
	s.refreshLogged(ctx)
}

func (s *Store) publishState(name, version string, st State, msg string) {
	s.bus.publish(Event{Type: EventState, Name: name, Version: version, State: st, Error: msg})
}

func (s *Store) publishProgress(t *transfer) {
	s.bus.publish(Event{Type: EventProgress, Name: t.name, Version: t.ver, State: StateDownloading, Progress: t.progress()})
}

// Subscribe returns the store's events (state changes and download
// progress) through a channel of buf events; a subscriber that falls
// behind loses events (counted in Stats). Call cancel when done.
func (s *Store) Subscribe(buf int) (<-chan Event, func()) { return s.bus.subscribe(buf) }

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		DownloadsStarted: s.stats.started.Load(), DownloadsCompleted: s.stats.completed.Load(),
		DownloadsFailed: s.stats.failed.Load(), DownloadedBytes: s.stats.bytes.Load(),
		Activations: s.stats.activations.Load(), ActivationFailures: s.stats.activateFails.Load(),
		Collected: s.stats.collected.Load(), EventsDropped: s.bus.dropped(), QuotaBytes: s.cfg.QuotaBytes,
	}
	st.StoredBytes, _ = s.usage()
	snap := s.snap.Load()
	st.Names = len(snap.names)
	for _, vs := range snap.versions {
		st.Versions += len(vs)
	}
	return st
}

// List returns every model the store knows, sorted by name, with their
// versions (newest first) and the progress of downloads.
func (s *Store) List(ctx context.Context) ([]Model, error) {
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	snap := s.snap.Load()
	out := make([]Model, 0, len(snap.names))
	for _, n := range snap.sortedNames() {
		out = append(out, s.model(snap, n))
	}
	return out, nil
}

// Get returns one model with its versions.
func (s *Store) Get(ctx context.Context, name string) (Model, error) {
	if why := ValidName(name); why != "" {
		return Model{}, fault.New(fault.Invalid, "%s", why)
	}
	if err := s.refresh(ctx); err != nil {
		return Model{}, err
	}
	snap := s.snap.Load()
	if _, ok := snap.names[name]; !ok {
		return Model{}, fault.New(fault.NotFound, "no model named %q in the store", name)
	}
	return s.model(snap, name), nil
}

// model assembles a Model from the snapshot and the live state.
func (s *Store) model(snap *snapshot, name string) Model {
	r := snap.names[name]
	m := Model{Name: name, Active: r.active, ActivatedAt: r.activatedAt, Desired: r.desired, Pinned: r.pinned}
	s.mu.Lock()
	activating := s.activating[name]
	for _, v := range snap.versions[name] {
		v.Path = ""
		switch {
		case v.State == StateReady && v.Version == r.active:
			v.State = StateActive
		case v.State == StateReady && v.Version == activating:
			v.State = StateActivating
		case v.State == StateDownloading || v.State == StateQueued:
			if t := s.transfers[v.Digest]; t != nil {
				v.Progress = t.progress()
			}
		}
		if v.State == StateReady {
			v.Path = s.blobPath(v.Digest)
		}
		m.Versions = append(m.Versions, v)
	}
	s.mu.Unlock()
	if m.Versions == nil {
		m.Versions = []Version{}
	}
	return m
}

// Resolve returns the active version of name, with the path of its file:
// what a pipeline's detect.model: name loads. A name the store knows but
// has no active version of yet is fault.Unavailable (wrapping
// ErrNotReady, saying why); an unknown name is fault.NotFound (wrapping
// ErrUnknown). It reads a snapshot: no I/O.
func (s *Store) Resolve(name string) (Version, error) {
	snap := s.snap.Load()
	r, ok := snap.names[name]
	if !ok {
		return Version{}, fault.New(fault.NotFound, "%w: no model named %q in the store", ErrUnknown, name)
	}
	if r.active != "" {
		for _, v := range snap.versions[name] {
			if v.Version == r.active {
				v.State = StateActive
				v.Path = s.blobPath(v.Digest)
				return v, nil
			}
		}
	}
	why := "no version is active"
	if r.desired == "" {
		// Retired by the deployment, or pulled by hand and never activated.
		var ready []string
		retired := false // only a deployment that drops the name clears its active version
		for _, v := range snap.versions[name] {
			if v.State == StateReady {
				ready = append(ready, v.Version)
			}
			retired = retired || !v.ActivatedAt.IsZero()
		}
		if retired {
			why += " (retired: the deployment no longer lists it)"
		}
		if len(ready) > 0 {
			why += fmt.Sprintf("; ledge models activate %s@%s serves one", name, ready[0])
		}
	}
	if r.desired != "" {
		for _, v := range snap.versions[name] {
			if v.Version != r.desired {
				continue
			}
			why = fmt.Sprintf("version %s is %s", v.Version, v.State)
			if v.Error != "" {
				why += ": " + v.Error
			}
			s.mu.Lock()
			if t := s.transfers[v.Digest]; t != nil {
				if p := t.progress(); p.Percent >= 0 {
					why = fmt.Sprintf("version %s is downloading (%.0f%%)", v.Version, p.Percent)
				}
			}
			s.mu.Unlock()
		}
	}
	return Version{}, fault.New(fault.Unavailable, "%w: model %q: %s", ErrNotReady, name, why)
}

// Errors Resolve wraps.
var (
	ErrUnknown  = errors.New("unknown model")
	ErrNotReady = errors.New("model not ready")
)

// snapshot is the store's tables as last read.
type snapshot struct {
	names    map[string]nameRow
	versions map[string][]Version // by name, newest first
}

func (sn *snapshot) sortedNames() []string { return slices.Sorted(maps.Keys(sn.names)) }

func (sn *snapshot) version(name, version string) (Version, bool) {
	for _, v := range sn.versions[name] {
		if v.Version == version {
			return v, true
		}
	}
	return Version{}, false
}

// refresh rebuilds the snapshot from the database.
func (s *Store) refresh(ctx context.Context) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	rows, err := s.names(ctx)
	if err != nil {
		return err
	}
	vs, err := s.versions(ctx, "")
	if err != nil {
		return err
	}
	sn := &snapshot{names: map[string]nameRow{}, versions: map[string][]Version{}}
	for n, r := range rows {
		sn.names[n] = *r
	}
	for _, v := range vs {
		if _, ok := sn.names[v.Name]; !ok {
			sn.names[v.Name] = nameRow{name: v.Name}
		}
		sn.versions[v.Name] = append(sn.versions[v.Name], v)
	}
	s.snap.Store(sn)
	return nil
}

func (s *Store) refreshLogged(ctx context.Context) {
	if err := s.refresh(context.WithoutCancel(ctx)); err != nil {
		s.log.Error("model store: refresh", "err", err)
	}
}
