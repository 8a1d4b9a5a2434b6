package models

import (
	"sync"
	"time"
)

// transfer is one download of a digest in progress. Versions that share
// the digest share the transfer.
type transfer struct {
	digest string
	url    string
	size   int64 // expected, 0 when unknown
	name   string
	ver    string

	mu sync.Mutex // guards p and the rate window
	p  Progress
	// rate over a sliding window: the sample from about a second ago
	winT time.Time
	winB int64
	// lastEvent limits progress events to a few per second.
	lastEvent time.Time
}

// progress returns a copy of the transfer's progress.
func (t *transfer) progress() *Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.p
	return &p
}

// begin starts attempt n at offset off of total bytes (0: unknown).
func (t *transfer) begin(attempt int, off, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.Attempt, t.p.Resumed, t.p.Bytes, t.p.Total = attempt, off, off, total
	t.p.Percent = percent(off, total)
	t.winT, t.winB = time.Now(), off
}

// add records n more bytes; it returns true when a progress event is due.
func (t *transfer) add(n int64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.Bytes += n
	t.p.Percent = percent(t.p.Bytes, t.p.Total)
	if el := now.Sub(t.winT); el >= 200*time.Millisecond {
		r := float64(t.p.Bytes-t.winB) / el.Seconds()
		if t.p.Rate == 0 {
			t.p.Rate = r
		} else {
			t.p.Rate = 0.6*t.p.Rate + 0.4*r
		}
		t.winT, t.winB = now, t.p.Bytes
	}
	if now.Sub(t.lastEvent) >= 250*time.Millisecond {
		t.lastEvent = now
		return true
	}
	return false
}

func percent(b, total int64) float64 {
	if total <= 0 {
		return -1
	}
	p := float64(b) * 100 / float64(total)
	return float64(int(p*10)) / 10
}
