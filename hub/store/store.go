package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ledge/internal/migrate"
)

var migrations = []string{
	`CREATE TABLE hub_queue (
		seq      INTEGER PRIMARY KEY,
		endpoint TEXT    NOT NULL,
		priority INTEGER NOT NULL,
		created  INTEGER NOT NULL, -- unix ms
		expires  INTEGER NOT NULL, -- unix ms, 0 = never
		data     BLOB    NOT NULL
	)`,
}

// Drop reasons counted by the store.
const (
	DropExpired  = "expired"
	DropQuota    = "quota"
	DropDiskFull = "disk_full" // refused, not acknowledged
)

// Options configure a Store.
type Options struct {
	DB         *sql.DB
	Logger     *slog.Logger
	QuotaBytes int64 // bound on queued bytes; 0 = no bound
	CacheBytes int64 // bodies kept in memory; default 16 MiB
	MaxBatch   int   // records per commit; default 1024
	Now        func() time.Time
	// Dir is on the file system the database is on; with ReserveBytes,
	// new records are refused (ErrDiskFull) rather than leave less than
	// that free there (free pages of the database count as free).
	Dir          string
	ReserveBytes int64
}

// Item is one record to enqueue.
type Item struct {
	Endpoint string
	Priority int
	TTL      time.Duration // 0 or negative: never expires
	Data     []byte
}

// Entry is a queued record handed to a consumer.
type Entry struct {
	Seq      int64
	Priority int
	Created  time.Time
	Data     []byte
}

type entry struct {
	seq      int64
	prio     int
	created  int64 // unix ms
	expires  int64 // unix ms, 0 never
	size     int64
	data     []byte // nil when not cached
	inflight bool
}

// queue is one priority's FIFO of an endpoint.
type queue struct {
	prio    int
	entries []*entry // head at 0
}

type endpoint struct {
	name     string
	queues   []*queue // sorted by prio ascending
	inflight map[int64]*entry
	count    int
	bytes    int64
	notify   chan struct{}
}

// Store is the queue. See the package doc.
type Store struct {
	db    *sql.DB
	log   *slog.Logger
	opts  Options
	now   func() time.Time
	ops   chan *op
	kick  chan struct{} // wakes the writer for pending deletes
	ready chan struct{} // closed when Run has its connection

	// The intake closes when Run stops: Enqueue registers as a sender
	// under intakeMu while it is open, and Run waits for the senders
	// after closing it, so every op is either taken by Run or refused.
	intakeMu sync.Mutex
	closing  bool           // guarded by intakeMu
	senders  sync.WaitGroup // Enqueue calls handing an op over
	stopped  chan struct{}  // closed with the intake: senders give up

	quota        atomic.Int64 // bound on queued bytes (0: none); SetQuota changes it
	mu           sync.Mutex   // guards the fields below
	eps          map[string]*endpoint
	nextSeq      int64
	bytes        int64
	cached       int64
	deletes      []int64
	drops        map[string]int64
	lastDropLg   time.Time
	committed    uint64 // records inserted
	commitErr    error  // the last commit's error, nil once one succeeds
	failures     uint64 // failed commits
	refusing     error  // ErrDiskFull with what is free, while new records are refused
	deletedBytes int64  // deleted since the WAL was last truncated
	lastFailLog  time.Time
}

type op struct {
	items []Item
	done  func(error)
}

// Open applies the schema and loads the index of what is queued.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 16 << 20
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1024
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := migrate.Apply(ctx, o.DB, "hub-queue", migrations); err != nil {
		return nil, err
	}
	s := &Store{db: o.DB, log: o.Logger, opts: o, now: o.Now, ops: make(chan *op, 4096), kick: make(chan struct{}, 1),
		ready: make(chan struct{}), stopped: make(chan struct{}), eps: map[string]*endpoint{}, drops: map[string]int64{}, nextSeq: 1}
	s.quota.Store(o.QuotaBytes)
	rows, err := o.DB.QueryContext(ctx, `SELECT seq, endpoint, priority, created, expires, length(data) FROM hub_queue ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("load queue: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e := &entry{}
		var ep string
		if err := rows.Scan(&e.seq, &ep, &e.prio, &e.created, &e.expires, &e.size); err != nil {
			return nil, fmt.Errorf("load queue: %w", err)
		}
		s.push(ep, e)
		s.nextSeq = e.seq + 1
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load queue: %w", err)
	}
	return s, nil
}

func (s *Store) ep(name string) *endpoint {
	ep := s.eps[name]
	if ep == nil {
		ep = &endpoint{name: name, inflight: map[int64]*entry{}, notify: make(chan struct{}, 1)}
		s.eps[name] = ep
	}
	return ep
}

// push appends e to its queue; s.mu held (or during Open).
func (s *Store) push(name string, e *entry) {
	ep := s.ep(name)
	q := ep.queue(e.prio)
	q.entries = append(q.entries, e)
	ep.count++
	ep.bytes += e.size
	s.bytes += e.size
	if e.data != nil {
		s.cached += e.size
	}
}

func (ep *endpoint) queue(prio int) *queue {
	i := sort.Search(len(ep.queues), func(i int) bool { return ep.queues[i].prio >= prio })
	if i < len(ep.queues) && ep.queues[i].prio == prio {
		return ep.queues[i]
	}
	q := &queue{prio: prio}
	ep.queues = append(ep.queues, nil)
	copy(ep.queues[i+1:], ep.queues[i:])
	ep.queues[i] = q
	return q
}

// SetQuota changes the bound on queued bytes (0: none). A lower bound is
// enforced from the next commit on, dropping as the quota policy says.
func (s *Store) SetQuota(bytes int64) {
	s.quota.Store(max(bytes, 0))
}

// Forget drops the bookkeeping of endpoint when nothing of it is queued or
// in flight, and reports whether it did (or had none). A later record or
// Notify for it starts afresh.
func (s *Store) Forget(endpoint string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := s.eps[endpoint]
	if ep == nil {
		return true
	}
	if ep.count > 0 || len(ep.inflight) > 0 {
		return false
	}
	delete(s.eps, endpoint)
	return true
}

// Notify returns a channel that receives after messages were queued for
// endpoint (or returned to it by Nack).
func (s *Store) Notify(endpoint string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ep(endpoint).notify
}

// Enqueue stores items and calls done (may be nil) after they are
// committed (err nil) or failed. done runs on the writer goroutine, or on
// the caller's with ErrStopped once Run has stopped: it must not block.
// Enqueue waits only while the writer is behind by a full buffer.
func (s *Store) Enqueue(items []Item, done func(error)) {
	s.intakeMu.Lock()
	if s.closing {
		s.intakeMu.Unlock()
		refuse(done)
		return
	}
	s.senders.Add(1)
	s.intakeMu.Unlock()
	defer s.senders.Done()
	select {
	case s.ops <- &op{items: items, done: done}:
	case <-s.stopped:
		refuse(done)
	}
}

func refuse(done func(error)) {
	if done != nil {
		done(ErrStopped)
	}
}

// closeIntake stops Enqueue from handing over ops and waits for those in
// the middle of it: after it, s.ops holds every op Run will ever get.
func (s *Store) closeIntake() {
	s.intakeMu.Lock()
	if s.closing {
		s.intakeMu.Unlock()
		return
	}
	s.closing = true
	s.intakeMu.Unlock()
	close(s.stopped)
	s.senders.Wait()
}

// drain takes every op left in s.ops.
func (s *Store) drain(batch []*op) []*op {
	for {
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		default:
			return batch
		}
	}
}

// Run is the writer: it commits queued inserts and deletes in batches and
// sweeps expired messages, until ctx ends; then it commits what is pending.
func (s *Store) Run(ctx context.Context) error {
	// Whatever Run leaves (it failed to start) is refused, not left waiting.
	defer func() {
		s.closeIntake()
		for _, o := range s.drain(nil) {
			refuse(o.done)
		}
	}()
	conn, err := s.db.Conn(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("queue writer: %w", err)
	}
	defer conn.Close()
	w := &writer{s: s, conn: conn}
	if err := w.prepare(); err != nil {
		return err
	}
	defer w.close()
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	batch := make([]*op, 0, 64)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			// Commit what arrived before the stop; what comes after it is
			// refused.
			s.closeIntake()
			w.commit(s.drain(batch))
			return nil
		case o := <-s.ops:
			batch = append(batch, o)
			n := len(o.items)
		more:
			for n < s.opts.MaxBatch {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
					n += len(o.items)
				default:
					break more
				}
			}
		case <-s.kick:
		case <-sweep.C:
			s.sweep()
			w.commit(batch)
			w.reclaim()
			continue
		}
		w.commit(batch)
	}
}

// Stats per endpoint.
type EndpointStats struct {
	Endpoint   string        `json:"endpoint"`
	Depth      int           `json:"depth"`    // queued, including in flight
	Inflight   int           `json:"inflight"` // handed out, not yet acked
	Bytes      int64         `json:"bytes"`
	OldestAge  time.Duration `json:"oldestAge"`  // age of the oldest queued message
	Priorities map[int]int   `json:"priorities"` // depth per priority (waiting only)
}

// Stats is a snapshot of the store.
type Stats struct {
	Endpoints  []EndpointStats  `json:"endpoints"`
	Bytes      int64            `json:"bytes"`
	QuotaBytes int64            `json:"quotaBytes"`
	Drops      map[string]int64 `json:"drops"`
	Committed  uint64           `json:"committed"`
	// CommitFailures counts failed commits; LastError is the last one's
	// error while no commit has succeeded since.
	CommitFailures uint64 `json:"commitFailures"`
	LastError      string `json:"lastError,omitempty"`
	// Refusing says why new messages are refused (the disk reserve), while
	// they are.
	Refusing string `json:"refusing,omitempty"`
}

// Stats returns depths, bytes, ages and drop counts.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	st := Stats{Bytes: s.bytes, QuotaBytes: s.quota.Load(), Drops: map[string]int64{}, Committed: s.committed, CommitFailures: s.failures}
	if s.commitErr != nil {
		st.LastError = s.commitErr.Error()
	}
	if s.refusing != nil {
		st.Refusing = s.refusing.Error()
	}
	for k, v := range s.drops {
		st.Drops[k] = v
	}
	for _, ep := range s.eps {
		es := EndpointStats{Endpoint: ep.name, Depth: ep.count, Inflight: len(ep.inflight), Bytes: ep.bytes, Priorities: map[int]int{}}
		oldest := int64(0)
		for _, q := range ep.queues {
			if len(q.entries) > 0 {
				es.Priorities[q.prio] = len(q.entries)
				if c := q.entries[0].created; oldest == 0 || c < oldest {
					oldest = c
				}
			}
		}
		for _, e := range ep.inflight {
			if oldest == 0 || e.created < oldest {
				oldest = e.created
			}
		}
		if oldest != 0 {
			es.OldestAge = time.Duration(now-oldest) * time.Millisecond
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	sort.Slice(st.Endpoints, func(i, j int) bool { return st.Endpoints[i].Endpoint < st.Endpoints[j].Endpoint })
	return st
}

// Next takes up to max waiting messages of endpoint, highest priority
// first and FIFO within it, marking them in flight. Expired messages met on
// the way are dropped. It returns nil when nothing waits.
func (s *Store) Next(ctx context.Context, endpoint string, max int) ([]Entry, error) {
	s.mu.Lock()
	ep := s.eps[endpoint]
	if ep == nil {
		s.mu.Unlock()
		return nil, nil
	}
	now := s.now().UnixMilli()
	var out []*entry
	for _, q := range ep.queues {
		if len(out) > 0 && q.prio != out[0].prio {
			break // batches never mix priorities
		}
		for len(q.entries) > 0 && len(out) < max {
			e := q.entries[0]
			q.entries[0] = nil
			q.entries = q.entries[1:]
			if e.expires != 0 && e.expires <= now {
				s.dropLocked(ep, e, DropExpired)
				continue
			}
			e.inflight = true
			ep.inflight[e.seq] = e
			out = append(out, e)
		}
		if len(out) > 0 {
			break
		}
	}
	var missing []int64
	for _, e := range out {
		if e.data == nil {
			missing = append(missing, e.seq)
		}
	}
	s.mu.Unlock()
	if len(out) == 0 {
		return nil, nil
	}
	loaded := map[int64][]byte{}
	if len(missing) > 0 {
		if err := s.load(ctx, missing, loaded); err != nil {
			s.Nack(endpoint, seqsOf(out))
			return nil, err
		}
	}
	res := make([]Entry, len(out))
	for i, e := range out {
		d := e.data
		if d == nil {
			d = loaded[e.seq]
		}
		res[i] = Entry{Seq: e.seq, Priority: e.prio, Created: time.UnixMilli(e.created), Data: d}
	}
	return res, nil
}

func seqsOf(es []*entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.seq
	}
	return out
}

func (s *Store) load(ctx context.Context, seqs []int64, into map[int64][]byte) error {
	for len(seqs) > 0 {
		n := min(len(seqs), 500)
		args := make([]any, n)
		for i := range n {
			args[i] = seqs[i]
		}
		q := `SELECT seq, data FROM hub_queue WHERE seq IN (?` + strings.Repeat(",?", n-1) + `)`
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("queue read: %w", err)
		}
		for rows.Next() {
			var seq int64
			var data []byte
			if err := rows.Scan(&seq, &data); err != nil {
				rows.Close()
				return fmt.Errorf("queue read: %w", err)
			}
			into[seq] = data
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("queue read: %w", err)
		}
		seqs = seqs[n:]
	}
	return nil
}

// Ack deletes delivered messages.
func (s *Store) Ack(endpoint string, seqs ...int64) {
	s.mu.Lock()
	ep := s.eps[endpoint]
	if ep != nil {
		for _, seq := range seqs {
			if e, ok := ep.inflight[seq]; ok {
				delete(ep.inflight, seq)
				s.forgetLocked(ep, e)
				s.deletes = append(s.deletes, seq)
			}
		}
	}
	s.mu.Unlock()
	s.wake()
}

// Nack returns in-flight messages to the head of their queues, in order.
func (s *Store) Nack(endpoint string, seqs []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := s.eps[endpoint]
	if ep == nil {
		return
	}
	back := map[int][]*entry{}
	for _, seq := range seqs {
		if e, ok := ep.inflight[seq]; ok {
			delete(ep.inflight, seq)
			e.inflight = false
			back[e.prio] = append(back[e.prio], e)
		}
	}
	for prio, es := range back {
		sort.Slice(es, func(i, j int) bool { return es[i].seq < es[j].seq })
		q := ep.queue(prio)
		q.entries = append(es, q.entries...)
	}
	if len(back) > 0 {
		signal(ep.notify)
	}
}

// NackAll returns every in-flight message of endpoint to its queue.
func (s *Store) NackAll(endpoint string) {
	s.mu.Lock()
	ep := s.eps[endpoint]
	var seqs []int64
	if ep != nil {
		for seq := range ep.inflight {
			seqs = append(seqs, seq)
		}
	}
	s.mu.Unlock()
	s.Nack(endpoint, seqs)
}

// forgetLocked removes e from the accounting (it is already out of its
// queue and in-flight map).
func (s *Store) forgetLocked(ep *endpoint, e *entry) {
	ep.count--
	ep.bytes -= e.size
	s.bytes -= e.size
	s.deletedBytes += e.size
	if e.data != nil {
		s.cached -= e.size
		e.data = nil
	}
}

func (s *Store) dropLocked(ep *endpoint, e *entry, reason string) {
	s.forgetLocked(ep, e)
	s.deletes = append(s.deletes, e.seq)
	s.countDropLocked(ep.name, reason)
}

// countDropLocked counts a drop and logs, at most every 10 s. A record
// refused for the disk reserve is counted only: it was never acknowledged
// (its sender keeps it), and the writer says once when the disk is full
// and once when there is room again.
func (s *Store) countDropLocked(endpoint, reason string) {
	s.drops[reason]++
	if reason == DropDiskFull {
		return
	}
	if now := s.now(); now.Sub(s.lastDropLg) > 10*time.Second {
		s.lastDropLg = now
		s.log.Warn("store-and-forward dropped messages", "reason", reason, "endpoint", endpoint,
			"dropped_expired", s.drops[DropExpired], "dropped_quota", s.drops[DropQuota])
	}
}

// sweep drops expired waiting messages everywhere.
func (s *Store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	for _, ep := range s.eps {
		for _, q := range ep.queues {
			kept := q.entries[:0]
			for _, e := range q.entries {
				if e.expires != 0 && e.expires <= now {
					s.dropLocked(ep, e, DropExpired)
					continue
				}
				kept = append(kept, e)
			}
			clear(q.entries[len(kept):])
			q.entries = kept
		}
	}
}

// victimLocked is the oldest waiting message of the lowest priority.
func (s *Store) victimLocked() (*endpoint, *queue) {
	var vEp *endpoint
	var vQ *queue
	for _, ep := range s.eps {
		for i := len(ep.queues) - 1; i >= 0; i-- {
			q := ep.queues[i]
			if len(q.entries) == 0 {
				continue
			}
			if vQ == nil || q.prio > vQ.prio || (q.prio == vQ.prio && q.entries[0].seq < vQ.entries[0].seq) {
				vEp, vQ = ep, q
			}
			break
		}
	}
	return vEp, vQ
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ErrTooLarge is returned (to done) for an item larger than the quota.
var ErrTooLarge = errors.New("message larger than the store-and-forward quota")

// ErrStopped is returned (to done) for records handed in after Run stopped
// taking them.
var ErrStopped = errors.New("store-and-forward: the queue has stopped")

// ErrDiskFull is returned (to done) for records refused because the file
// system would keep less than Options.ReserveBytes free.
var ErrDiskFull = errors.New("store-and-forward: disk reserve reached")
