package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"

	_ "github.com/mattn/go-sqlite3"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, o Options) (*Store, func()) {
	t.Helper()
	s, err := Open(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return s, stop
}

func enqueue(t *testing.T, s *Store, items ...Item) {
	t.Helper()
	errc := make(chan error, 1)
	s.Enqueue(items, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func datas(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, string(e.Data))
	}
	return out
}

func TestPriorityFIFOAckNack(t *testing.T) {
	s, _ := start(t, Options{DB: testenv.DB(t)})
	enqueue(t, s, Item{"up", 5, 0, []byte("a5")}, Item{"up", 1, 0, []byte("b1")}, Item{"up", 5, 0, []byte("c5")},
		Item{"up", 1, 0, []byte("d1")}, Item{"other", 0, 0, []byte("x")})
	got, _ := s.Next(t.Context(), "up", 10)
	if fmt.Sprint(datas(got)) != "[b1 d1]" {
		t.Fatalf("first batch %v, want the priority-1 messages in order", datas(got))
	}
	s.Nack("up", []int64{got[1].Seq})
	s.Ack("up", got[0].Seq)
	got, _ = s.Next(t.Context(), "up", 10)
	if fmt.Sprint(datas(got)) != "[d1]" {
		t.Fatalf("after nack %v", datas(got))
	}
	s.Ack("up", got[0].Seq)
	got, _ = s.Next(t.Context(), "up", 1)
	if fmt.Sprint(datas(got)) != "[a5]" {
		t.Fatalf("%v", datas(got))
	}
	st := s.Stats()
	if len(st.Endpoints) != 2 || st.Endpoints[1].Depth != 2 || st.Endpoints[1].Inflight != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db := testenv.DBAt(t, path)
	s, stop := start(t, Options{DB: db, CacheBytes: 1})
	for i := range 100 {
		enqueue(t, s, Item{"up", i % 3, 0, []byte(fmt.Sprint(i))})
	}
	got, _ := s.Next(t.Context(), "up", 10)
	s.Ack("up", got[0].Seq, got[1].Seq)
	stop()
	db.Close()

	s2, _ := start(t, Options{DB: testenv.DBAt(t, path)})
	if st := s2.Stats(); st.Endpoints[0].Depth != 98 {
		t.Fatalf("after reopen depth %d, want 98 (2 acked)", st.Endpoints[0].Depth)
	}
	var all []string
	for {
		es, err := s2.Next(t.Context(), "up", 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			all = append(all, string(e.Data))
			s2.Ack("up", e.Seq)
		}
	}
	// priority 0 first (0,3,...,99), minus the two acked (0 and 3).
	if len(all) != 98 || all[0] != "6" || all[32] != "1" {
		t.Errorf("order after reopen: %v", all[:40])
	}
}

func TestTTLExpiryCounted(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s, _ := start(t, Options{DB: testenv.DB(t), Now: c.now})
	enqueue(t, s, Item{"up", 0, time.Second, []byte("short")}, Item{"up", 0, time.Hour, []byte("long")}, Item{"up", 0, 0, []byte("forever")})
	c.add(2 * time.Second)
	got, _ := s.Next(t.Context(), "up", 10)
	if fmt.Sprint(datas(got)) != "[long forever]" {
		t.Fatalf("%v", datas(got))
	}
	if d := s.Stats().Drops[DropExpired]; d != 1 {
		t.Errorf("expired drops %d, want 1", d)
	}
	// The sweep drops waiting messages too.
	enqueue(t, s, Item{"up", 0, time.Second, []byte("x")})
	c.add(2 * time.Second)
	s.sweep()
	if d := s.Stats().Drops[DropExpired]; d != 2 {
		t.Errorf("expired drops %d after sweep, want 2", d)
	}
}

func TestQuotaDropsOldestOfLowestPriority(t *testing.T) {
	db := testenv.DB(t)
	s, _ := start(t, Options{DB: db, QuotaBytes: 100})
	enqueue(t, s, Item{"a", 0, 0, make([]byte, 30)}, Item{"b", 9, 0, []byte("b9-old-padding-padding-padding")[:30]},
		Item{"a", 9, 0, []byte("a9-new-padding-padding-padding")[:30]})
	enqueue(t, s, Item{"a", 0, 0, make([]byte, 30)})
	st := s.Stats()
	if st.Drops[DropQuota] != 1 || st.Bytes != 90 {
		t.Fatalf("stats %+v", st)
	}
	got, _ := s.Next(t.Context(), "b", 10)
	if len(got) != 0 {
		t.Errorf("b's older priority-9 message should have been dropped, got %v", datas(got))
	}
	// A flood keeps the quota.
	for i := range 200 {
		enqueue(t, s, Item{"a", i % 10, 0, make([]byte, 10)})
	}
	st = s.Stats()
	if st.Bytes > 100 {
		t.Errorf("bytes %d over quota 100", st.Bytes)
	}
	// Drops are deleted in the transaction that commits what made room:
	// once enqueue has returned, the database holds the quota too.
	var n int
	db.QueryRow(`SELECT COALESCE(SUM(length(data)),0) FROM hub_queue`).Scan(&n)
	if n > 100 {
		t.Errorf("database holds %d bytes over quota 100", n)
	}
	errc := make(chan error, 1)
	s.Enqueue([]Item{{"a", 0, 0, make([]byte, 101)}}, func(err error) { errc <- err })
	if err := <-errc; err != ErrTooLarge {
		t.Errorf("oversized item: %v", err)
	}
}

// TestSpaceReclaimed: with auto_vacuum=incremental (as appliance creates
// the database), the file shrinks after the queue drains.
func TestSpaceReclaimed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_txlock=immediate&_auto_vacuum=incremental")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := start(t, Options{DB: db})
	for range 20 {
		items := make([]Item, 50)
		for i := range items {
			items[i] = Item{"up", 0, 0, make([]byte, 4096)}
		}
		enqueue(t, s, items...)
	}
	full := fileSize(t, db)
	drainUp(t, s)
	deadline := time.Now().Add(5 * time.Second)
	for fileSize(t, db) > full/4 {
		if time.Now().After(deadline) {
			t.Fatalf("database still %d bytes after draining (%d full)", fileSize(t, db), full)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWALBoundedAfterDrain: a commit larger than the WAL bound grows the
// WAL past it; once the queue has drained, the WAL file is truncated (the
// checkpoint-truncate after a drain: under a quarter of walLimit, where
// journal_size_limit alone leaves walLimit). Without either it kept its
// peak size, space a small disk never got back.
func TestWALBoundedAfterDrain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := start(t, Options{DB: db})
	items := make([]Item, 3*walLimit/(64<<10)) // one commit of 3 × the bound
	for i := range items {
		items[i] = Item{"up", 0, 0, make([]byte, 64<<10)}
	}
	enqueue(t, s, items...)
	wal := func() int64 {
		st, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return st.Size()
	}
	if n := wal(); n <= walLimit {
		t.Fatalf("WAL %d bytes after a commit of %d: the test does not grow it past the bound %d", n, len(items)<<16, walLimit)
	}
	drainUp(t, s)
	deadline := time.Now().Add(5 * time.Second)
	for wal() > walLimit/4 {
		if time.Now().After(deadline) {
			t.Fatalf("WAL still %d bytes 5 s after the queue drained, want it truncated (bound %d)", wal(), walLimit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileSize(t *testing.T, db *sql.DB) int64 {
	var pages, size int64
	db.QueryRow(`PRAGMA page_count`).Scan(&pages)
	db.QueryRow(`PRAGMA page_size`).Scan(&size)
	return pages * size
}

// TestEnqueueAfterStop: once Run has returned, Enqueue neither blocks nor
// drops its callback: every record handed in after the stop is refused
// with ErrStopped, more than the intake's buffer holds, and what came
// before the stop is committed.
func TestEnqueueAfterStop(t *testing.T) {
	s, stop := start(t, Options{DB: testenv.DB(t)})
	enqueue(t, s, Item{Endpoint: "up", Data: []byte("before")})
	stop()
	const n = 5000 // over the 4096 records the intake buffers
	errs := make(chan error, n)
	go func() {
		for i := range n {
			s.Enqueue([]Item{{Endpoint: "up", Data: fmt.Appendf(nil, "after %d", i)}}, func(err error) { errs <- err })
		}
	}()
	for i := range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("record %d after the stop: %v, want ErrStopped", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d records enqueued after the stop were answered; Enqueue blocks or dropped the rest", i, n)
		}
	}
	if st := s.Stats(); len(st.Endpoints) != 1 || st.Endpoints[0].Depth != 1 {
		t.Errorf("queued after the stop: %+v, want only the record from before", st.Endpoints)
	}
}

// TestEnqueueRacingStop: records enqueued while the writer stops are each
// answered once, committed or refused with ErrStopped, never left waiting.
func TestEnqueueRacingStop(t *testing.T) {
	for round := range 20 {
		s, stop := start(t, Options{DB: testenv.DB(t)})
		const writers, each = 4, 300
		var answered, committed sync.WaitGroup
		answered.Add(writers * each)
		var mu sync.Mutex
		ok := 0
		for w := range writers {
			committed.Go(func() {
				for i := range each {
					s.Enqueue([]Item{{Endpoint: "up", Data: fmt.Appendf(nil, "%d-%d", w, i)}}, func(err error) {
						if err == nil {
							mu.Lock()
							ok++
							mu.Unlock()
						} else if !errors.Is(err, ErrStopped) {
							t.Errorf("round %d: %v", round, err)
						}
						answered.Done()
					})
				}
			})
		}
		stop()
		committed.Wait()
		wait := make(chan struct{})
		go func() { answered.Wait(); close(wait) }()
		select {
		case <-wait:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: some records were never answered", round)
		}
		if depth := totalDepth(s.Stats()); depth != ok {
			t.Fatalf("round %d: %d records committed, %d queued", round, ok, depth)
		}
	}
}

func totalDepth(st Stats) int {
	n := 0
	for _, e := range st.Endpoints {
		n += e.Depth
	}
	return n
}

// TestForget: an endpoint's bookkeeping goes only when nothing of it is
// queued or in flight.
func TestForget(t *testing.T) {
	s, _ := start(t, Options{DB: testenv.DB(t)})
	enqueue(t, s, Item{Endpoint: "in", Data: []byte("x")})
	if s.Forget("in") {
		t.Fatal("forgot an endpoint with a queued record")
	}
	got, _ := s.Next(t.Context(), "in", 1)
	if s.Forget("in") {
		t.Fatal("forgot an endpoint with a record in flight")
	}
	s.Ack("in", got[0].Seq)
	if !s.Forget("in") {
		t.Fatal("kept an empty endpoint")
	}
	if st := s.Stats(); len(st.Endpoints) != 0 {
		t.Fatalf("endpoints after Forget: %+v", st.Endpoints)
	}
	enqueue(t, s, Item{Endpoint: "in", Data: []byte("y")})
	select {
	case <-s.Notify("in"):
	default:
		t.Fatal("no notification for a record queued after Forget")
	}
}

// TestDiskFullLoggedOnce: a disk below the reserve (a real tmpfs, a file
// filling it) refuses every new record; the log says so once (with the
// free bytes and the reserve), not every 10 s for as long as the disk
// stays full, and once there is room again it says so (INFO). Refused
// records are not lost ones (the sender keeps them): the WARN about drops
// of queued messages does not speak of them.
func TestDiskFullLoggedOnce(t *testing.T) {
	dir := testenv.Tmpfs(t, "24m")
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "q.db")+"?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	logs := &lockedLog{}
	clk := &clock{t: time.Now()}
	s, _ := start(t, Options{DB: db, Dir: dir, ReserveBytes: 4 << 20, Now: clk.now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	enqueue(t, s, Item{"up", 0, 0, []byte("before")})
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		clk.add(15 * time.Second) // past the writer's cache of the free space (250 ms)
		errc := make(chan error, 1)
		s.Enqueue([]Item{{"up", 0, 0, []byte(fmt.Sprint("full ", i))}}, func(err error) { errc <- err })
		if err := <-errc; !errors.Is(err, ErrDiskFull) {
			t.Fatalf("a record on a full disk: %v, want ErrDiskFull", err)
		}
	}
	log := logs.String()
	if n := strings.Count(log, "level=WARN") + strings.Count(log, "level=ERROR"); n != 1 || !strings.Contains(log, "reserve=4194304") {
		t.Errorf("%d WARN and ERROR lines for 5 records refused over 75 s, want 1 naming the reserve:\n%s", n, log)
	}
	if strings.Contains(log, "dropped messages") {
		t.Errorf("refused records are logged as dropped queued messages:\n%s", log)
	}
	os.Remove(filler)
	clk.add(time.Second)
	enqueue(t, s, Item{"up", 0, 0, []byte("after")})
	if n := strings.Count(logs.String(), "disk space back"); n != 1 {
		t.Errorf("the first record stored after the disk had room: %d recovery lines, want 1:\n%s", n, logs)
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// drainUp acknowledges everything queued for "up".
func drainUp(t *testing.T, s *Store) {
	t.Helper()
	for {
		es, _ := s.Next(t.Context(), "up", 500)
		if len(es) == 0 {
			return
		}
		for _, e := range es {
			s.Ack("up", e.Seq)
		}
	}
}
