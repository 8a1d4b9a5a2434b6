package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// writer owns the connection the store commits on.
type writer struct {
	s             *Store
	conn          *sql.Conn
	ins           *sql.Stmt
	del           *sql.Stmt
	lastVacuumLog time.Time
	free          int64     // free bytes at freeAt, less what was stored since
	freeAt        time.Time // when free was measured
}

// walLimit bounds the WAL file left after a checkpoint (SQLite's
// journal_size_limit): without it the WAL keeps its peak size, which on a
// small disk is space the queue cannot get back.
const walLimit = 4 << 20

func (w *writer) prepare() error {
	ctx := context.Background()
	var err error
	if _, err = w.conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA journal_size_limit = %d`, walLimit)); err != nil {
		return fmt.Errorf("queue writer: %w", err)
	}
	if w.ins, err = w.conn.PrepareContext(ctx, `INSERT INTO hub_queue (seq, endpoint, priority, created, expires, data) VALUES (?, ?, ?, ?, ?, ?)`); err != nil {
		return fmt.Errorf("queue writer: %w", err)
	}
	if w.del, err = w.conn.PrepareContext(ctx, `DELETE FROM hub_queue WHERE seq = ?`); err != nil {
		return fmt.Errorf("queue writer: %w", err)
	}
	return nil
}

func (w *writer) close() {
	w.ins.Close()
	w.del.Close()
}

type pending struct {
	ep string
	e  *entry
}

// commit writes the inserts of batch and every pending delete in one
// transaction, then publishes the inserted entries and calls done.
func (w *writer) commit(batch []*op) {
	s := w.s
	s.mu.Lock()
	dels := s.deletes
	s.deletes = nil
	// Assign sequences and make room under the quota now, so the quota
	// holds for what is committed.
	now := s.now().UnixMilli()
	var ins []pending
	errs := make([]error, len(batch))
	var batchBytes int64
	for i, o := range batch {
		for _, it := range o.items {
			if s.quota.Load() > 0 && int64(len(it.Data)) > s.quota.Load() {
				errs[i] = ErrTooLarge
			}
		}
		if errs[i] != nil {
			continue
		}
		for _, it := range o.items {
			e := &entry{seq: s.nextSeq, prio: it.Priority, created: now, size: int64(len(it.Data)), data: it.Data}
			s.nextSeq++
			if it.TTL > 0 {
				e.expires = now + it.TTL.Milliseconds()
			}
			ins = append(ins, pending{it.Endpoint, e})
			batchBytes += e.size
		}
	}
	ins = s.fitQuotaLocked(ins, batchBytes)
	dels = append(dels, s.deletes...) // quota drops
	s.deletes = nil
	s.mu.Unlock()

	// The disk reserve: refuse what would leave less than it free.
	if len(ins) > 0 {
		var insBytes int64
		for _, p := range ins {
			insBytes += p.e.size
		}
		if err := w.checkReserve(insBytes); err != nil {
			for i := range errs {
				if errs[i] == nil && len(batch[i].items) > 0 {
					errs[i] = err
				}
			}
			s.mu.Lock()
			for _, p := range ins {
				s.countDropLocked(p.ep, DropDiskFull)
			}
			s.mu.Unlock()
			ins = nil
		}
	}

	if len(ins) == 0 && len(dels) == 0 {
		w.finish(batch, errs, nil, ins, 0, nil)
		return
	}
	err := w.tx(ins, dels)
	if err != nil && len(ins) > 0 && len(dels) > 0 {
		// Deletes free space; they must not wait for inserts that do not fit.
		if derr := w.tx(nil, dels); derr == nil {
			w.finish(nil, nil, nil, nil, 0, dels)
			dels = nil
		}
	}
	w.finish(batch, errs, err, ins, 0, dels)
	if err != nil && isDiskFull(err) {
		w.checkpoint() // a truncated WAL may be the room the next commit needs
	}
}

// checkReserve reports ErrDiskFull when storing n more bytes would leave
// less than the reserve free on the file system (free pages in the
// database file count: new records reuse them).
func (w *writer) checkReserve(n int64) error {
	s := w.s
	if s.opts.ReserveBytes <= 0 || s.opts.Dir == "" {
		return nil
	}
	// Measured at most every 250 ms (of the store's clock) while well
	// above the reserve; in between, what was stored since is taken off
	// the last measure.
	if n > 0 && s.opts.Now().Sub(w.freeAt) < 250*time.Millisecond && w.free-2*n >= 2*s.opts.ReserveBytes {
		w.free -= 2 * n
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.opts.Dir, &st); err != nil {
		return nil // cannot tell: SQLite reports a full disk itself
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var pages, size int64
	ctx := context.Background()
	if w.conn.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&pages) == nil &&
		w.conn.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size) == nil {
		free += pages * size
	}
	w.free, w.freeAt = free, s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if free-2*n < s.opts.ReserveBytes { // twice: the WAL, then the database
		err := fmt.Errorf("%w: %d bytes free on %s, reserve %d", ErrDiskFull, free, s.opts.Dir, s.opts.ReserveBytes)
		if s.refusing == nil {
			s.log.Error("store-and-forward: disk almost full, new messages refused until space is back",
				"free", free, "reserve", s.opts.ReserveBytes, "dir", s.opts.Dir)
		}
		s.refusing = err
		return err
	}
	if s.refusing != nil {
		s.log.Info("store-and-forward: disk space back, accepting messages", "free", free)
		s.refusing = nil
	}
	return nil
}

func isDiskFull(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "disk is full") || strings.Contains(err.Error(), "no space"))
}

// checkpoint copies the WAL into the database and truncates it.
func (w *writer) checkpoint() error {
	rows, err := w.conn.QueryContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`)
	if err != nil {
		return err
	}
	var busy, logPages, done int
	for rows.Next() {
		rows.Scan(&busy, &logPages, &done)
	}
	err = rows.Err()
	rows.Close()
	if err == nil && busy != 0 {
		err = fmt.Errorf("wal checkpoint: busy")
	}
	return err
}

func (w *writer) tx(ins []pending, dels []int64) error {
	ctx := context.Background()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = w.tryTx(ctx, ins, dels); err == nil {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return err
}

func (w *writer) tryTx(ctx context.Context, ins []pending, dels []int64) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("queue commit: %w", err)
	}
	defer tx.Rollback()
	insStmt, delStmt := tx.StmtContext(ctx, w.ins), tx.StmtContext(ctx, w.del)
	for _, p := range ins {
		if _, err := insStmt.ExecContext(ctx, p.e.seq, p.ep, p.e.prio, p.e.created, p.e.expires, p.e.data); err != nil {
			return fmt.Errorf("queue insert: %w", err)
		}
	}
	for _, seq := range dels {
		if _, err := delStmt.ExecContext(ctx, seq); err != nil {
			return fmt.Errorf("queue delete: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("queue commit: %w", err)
	}
	return nil
}

func (w *writer) finish(batch []*op, errs []error, txErr error, ins []pending, reserved int64, dels []int64) {
	s := w.s
	s.mu.Lock()
	s.bytes -= reserved
	if txErr != nil {
		if now := time.Now(); s.commitErr == nil || now.Sub(s.lastFailLog) > 10*time.Second {
			s.lastFailLog = now
			s.log.Error("store-and-forward commit failed", "err", txErr, "messages", len(ins), "failures", s.failures+1)
		}
		s.deletes = append(s.deletes, dels...) // retried with the next commit
		s.failures++
		s.commitErr = txErr
	} else {
		if len(ins) > 0 || len(dels) > 0 {
			s.commitErr = nil
		}
		touched := map[*endpoint]bool{}
		for _, p := range ins {
			if s.cached+p.e.size > s.opts.CacheBytes {
				p.e.data = nil
			}
			s.push(p.ep, p.e)
			touched[s.eps[p.ep]] = true
		}
		s.committed += uint64(len(ins))
		for ep := range touched {
			signal(ep.notify)
		}
	}
	s.mu.Unlock()
	for i, o := range batch {
		if o.done == nil {
			continue
		}
		err := errs[i]
		if err == nil {
			err = txErr
		}
		o.done(err)
	}
}

// fitQuotaLocked drops messages until the queued bytes plus the batch fit
// the quota: always the oldest waiting message of the lowest priority,
// whether it is queued already or in this batch (queued ones are older).
func (s *Store) fitQuotaLocked(ins []pending, batchBytes int64) []pending {
	if s.quota.Load() <= 0 {
		return ins
	}
	for s.bytes+batchBytes > s.quota.Load() {
		vEp, vQ := s.victimLocked()
		bi := -1
		for i, p := range ins {
			if bi < 0 || p.e.prio > ins[bi].e.prio {
				bi = i
			}
		}
		switch {
		case vQ != nil && (bi < 0 || vQ.prio >= ins[bi].e.prio):
			e := vQ.entries[0]
			vQ.entries[0] = nil
			vQ.entries = vQ.entries[1:]
			s.dropLocked(vEp, e, DropQuota)
		case bi >= 0:
			batchBytes -= ins[bi].e.size
			s.countDropLocked(ins[bi].ep, DropQuota)
			ins = append(ins[:bi], ins[bi+1:]...)
		default:
			return ins // everything is in flight
		}
	}
	return ins
}

// reclaimPages is how many free pages make the store give space back;
// reclaimStep is how many it gives back per step.
const (
	reclaimPages = 256
	reclaimStep  = 128
)

// reclaim runs each second. It truncates the WAL once the queue is empty
// (the WAL keeps its peak size otherwise), clears a commit error when the
// database commits again with nothing pending (health heals by itself),
// and, when the database was created with auto_vacuum=incremental
// (appliance does that), returns free pages to the file system in small
// steps, each followed by a checkpoint, so it works with little free
// space and the file shrinks as the queue drains.
func (w *writer) reclaim() {
	s := w.s
	s.mu.Lock()
	empty, failing, pending, refusing := s.bytes == 0, s.commitErr != nil, len(s.deletes) > 0, s.refusing != nil
	s.mu.Unlock()
	if refusing {
		w.checkReserve(0) // space may be back: accept again
	}
	if failing && !pending {
		if err := w.tx(nil, nil); err == nil {
			s.mu.Lock()
			s.commitErr = nil
			s.mu.Unlock()
		}
	}
	// After a drain of more than the WAL bound (or while commits fail),
	// truncate the WAL: not every second, as the next commit would grow
	// the file again.
	s.mu.Lock()
	drained := empty && s.deletedBytes > walLimit
	if drained {
		s.deletedBytes = 0
	}
	s.mu.Unlock()
	if failing || drained {
		w.checkpoint()
	}
	ctx := context.Background()
	var mode, free int64
	if w.conn.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode) != nil || mode != 2 {
		return
	}
	if w.conn.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free) != nil || free < reclaimPages {
		return
	}
	for steps := 0; free > 0 && steps < 64; steps++ {
		if err := w.vacuumStep(ctx); err != nil {
			if time.Since(w.lastVacuumLog) > time.Minute {
				w.lastVacuumLog = time.Now()
				s.log.Warn("store-and-forward: incremental vacuum", "err", err)
			}
			return
		}
		w.checkpoint()
		if w.conn.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free) != nil {
			return
		}
	}
}

func (w *writer) vacuumStep(ctx context.Context) error {
	rows, err := w.conn.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, reclaimStep))
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	err = rows.Err()
	rows.Close()
	return err
}
