package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// writer owns the connection the store commits on.
type writer struct {
	s    *Store
	conn *sql.Conn
	ins  *sql.Stmt
	del  *sql.Stmt
}

func (w *writer) prepare() error {
	ctx := context.Background()
	var err error
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

	if len(ins) == 0 && len(dels) == 0 {
		w.finish(batch, errs, nil, ins, 0, nil)
		return
	}
	err := w.tx(ins, dels)
	w.finish(batch, errs, err, ins, 0, dels)
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
		s.log.Error("store-and-forward commit failed", "err", txErr, "messages", len(ins))
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

// reclaimPages is how many free pages make the store give space back.
const reclaimPages = 256

// reclaim returns free pages to the file system when the database was
// created with auto_vacuum=incremental (appliance does that), so the file
// shrinks as the queue drains rather than staying at its peak.
func (w *writer) reclaim() {
	ctx := context.Background()
	var mode, free int64
	if w.conn.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode) != nil || mode != 2 {
		return
	}
	if w.conn.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free) != nil || free < reclaimPages {
		return
	}
	rows, err := w.conn.QueryContext(ctx, `PRAGMA incremental_vacuum`)
	if err != nil {
		w.s.log.Warn("store-and-forward: incremental vacuum", "err", err)
		return
	}
	for rows.Next() {
	}
	rows.Close()
}
