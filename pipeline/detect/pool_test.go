package detect

import (
	"context"
	"errors"
	"testing"
	"time"

	"ledge/inference"
	"ledge/internal/testenv"
)

// hangingLoads makes the model at path "slow.onnx" hang until release is
// closed and then fail (or, with real, load yolox_nano): a load the real
// ONNX Runtime cannot be made to hang on demand. Other paths load for real.
func hangingLoads(t *testing.T, p *Pool, real bool) (started <-chan struct{}, release chan struct{}, calls *int) {
	t.Helper()
	st := make(chan struct{}, 10)
	release = make(chan struct{})
	n := 0
	yolox := testenv.Model(t, "yolox_nano.onnx")
	p.newDetector = func(rt *inference.Runtime, path string, o inference.Options) (*inference.Detector, error) {
		if path != "slow.onnx" {
			return rt.NewDetector(path, o)
		}
		n++
		st <- struct{}{}
		<-release
		if real {
			return rt.NewDetector(yolox, o)
		}
		return nil, errors.New("slow model: not a readable ONNX model")
	}
	return st, release, &n
}

func within(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: not within 60 s", what)
	}
}

// TestPoolLoadsOutsideItsLock: while one model hangs in its load, another
// model loads and is released, a stage that gives up waiting for the
// hanging one gets its context's error at once, and the pool answers; the
// failed load leaves the pool, so the next acquire tries again; the last
// release closes ONNX Runtime.
func TestPoolLoadsOutsideItsLock(t *testing.T) {
	p := NewPool(testenv.ORTLib(t), nil, "")
	started, release, calls := hangingLoads(t, p, false)
	slow := key{path: "slow.onnx", kind: "yolox", sessions: 1, threads: 1}
	fast := key{path: testenv.Model(t, "yolox_nano.onnx"), kind: "yolox", sessions: 1, threads: 1}

	first := make(chan error, 1)
	go func() {
		_, err := p.acquire(context.Background(), slow, "slow@1", false)
		first <- err
	}()
	within(t, "the slow load to start", started)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e, err := p.acquire(ctx, fast, "fast@1", false)
	if err != nil {
		t.Fatalf("a second model while the first hangs: %v", err)
	}
	if p.Open() != 1 {
		t.Errorf("%d detectors open, want the one loaded (not the one loading)", p.Open())
	}
	gaveUp, giveUp := context.WithCancel(t.Context())
	giveUp()
	if _, err := p.acquire(gaveUp, slow, "slow@1", false); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire with an ended context while the model loads: %v", err)
	}
	p.release(e)

	close(release)
	if err := <-first; err == nil || err.Error() != "slow model: not a readable ONNX model" {
		t.Errorf("the slow load: %v", err)
	}
	if _, err := p.acquire(t.Context(), slow, "slow@1", false); err == nil || *calls != 2 {
		t.Errorf("acquire after a failed load: %v after %d loads, want a second load", err, *calls)
	}
	p.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.entries) != 0 || p.rt != nil {
		t.Errorf("%d entries and runtime %v left", len(p.entries), p.rt)
	}
	if p.Loads() != 1 {
		t.Errorf("%d loads counted, want 1", p.Loads())
	}
}

// TestPoolLoadNobodyWaitsFor: a load every stage gave up waiting for is
// closed as soon as it ends.
func TestPoolLoadNobodyWaitsFor(t *testing.T) {
	p := NewPool(testenv.ORTLib(t), nil, "")
	started, release, _ := hangingLoads(t, p, true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := p.acquire(ctx, key{path: "slow.onnx", kind: "yolox", sessions: 1, threads: 1}, "slow@1", true)
		done <- err
	}()
	within(t, "the load to start", started)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("acquire: %v", err)
	}
	close(release)
	p.Wait()
	if p.Open() != 0 || p.Loads() != 1 {
		t.Errorf("%d open after %d loads: want the abandoned load closed", p.Open(), p.Loads())
	}
}

// TestStageSwap: a stage prepares another model beside its own; an abort
// changes nothing; a commit switches between two calls, and the old model
// is released.
func TestStageSwap(t *testing.T) {
	p := NewPool(testenv.ORTLib(t), nil, "")
	res := resolver{"people": {Path: testenv.Model(t, "yolox_nano.onnx"), Kind: "yolox", Version: "1"}}
	s, err := NewStage(t.Context(), Spec{Model: "people"}, Layout{Sessions: 1, Threads: 1}, p, res)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := s.Prepare(t.Context(), res["people"]); w != nil || err != nil {
		t.Errorf("preparing the model it runs: %v, %v", w, err)
	}
	v2 := Model{Path: testenv.Model(t, "fastestdet.onnx"), Kind: "fastestdet", Version: "2"}
	w, err := s.Prepare(t.Context(), v2)
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, v := s.Info(); v != "1" || p.Open() != 1 {
		t.Errorf("after abort: version %s, %d open", v, p.Open())
	}
	bad := Model{Path: testenv.Model(t, "coco80.txt"), Kind: "yolox", Version: "3"}
	if _, err := s.Prepare(t.Context(), bad); err == nil || err.Error()[:16] != "model people@3: " {
		t.Errorf("preparing a text file: %v", err)
	}
	if w, err = s.Prepare(t.Context(), v2); err != nil {
		t.Fatal(err)
	}
	w.Commit()
	if _, v := s.Info(); v != "1" {
		t.Errorf("version %s before the next frame, want 1", v)
	}
	if !s.Ready() {
		t.Fatal("not ready")
	}
	if _, v := s.Info(); v != "2" {
		t.Errorf("version %s after the switch, want 2", v)
	}
	p.Wait()
	if p.Open() != 1 {
		t.Errorf("%d open after the switch, want the new one only", p.Open())
	}
	s.Close()
	if p.Open() != 0 {
		t.Errorf("%d open after close", p.Open())
	}
}

type resolver map[string]Model

func (r resolver) Resolve(name string) (Model, error) {
	m, ok := r[name]
	if !ok {
		return Model{}, ErrUnknownModel
	}
	return m, nil
}
