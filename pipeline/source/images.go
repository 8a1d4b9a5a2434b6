package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gocv.io/x/gocv"
)

// images reads an image folder or glob in name order.
type images struct {
	files []string
	next  int
	loop  bool
	step  time.Duration // 0: unpaced
	start time.Time
	n     int           // frames read so far, for scene time
	wait  time.Duration // waited for the pace in the last Read
}

var imageExts = []string{".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

func openImages(s Spec, t Target) (Reader, error) {
	pattern := t.Path
	if fi, err := os.Stat(pattern); err == nil && fi.IsDir() {
		pattern = filepath.Join(pattern, "*")
	}
	all, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("glob %s: %w", t.Path, err)
	}
	var files []string
	for _, f := range all {
		if slices.Contains(imageExts, strings.ToLower(filepath.Ext(f))) {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no images match %s", t.Path)
	}
	slices.Sort(files)
	im := &images{files: files, loop: s.Loop}
	if s.Realtime {
		fps := s.FPS
		if fps <= 0 {
			fps = 1
		}
		im.step = time.Duration(float64(time.Second) / fps)
	}
	return im, nil
}

func (im *images) Read(ctx context.Context, dst *gocv.Mat) (time.Time, error) {
	if im.start.IsZero() {
		im.start = time.Now()
	}
	if im.next >= len(im.files) {
		if !im.loop {
			return time.Time{}, ErrEnd
		}
		im.next = 0
	}
	f := im.files[im.next]
	im.next++
	m := gocv.IMRead(f, gocv.IMReadColor)
	defer m.Close()
	if m.Empty() {
		return time.Time{}, fmt.Errorf("read image %s: not a readable image", f)
	}
	m.CopyTo(dst)
	step := im.step
	if step == 0 {
		step = 40 * time.Millisecond // scene time of an unpaced set: 25 frames/s
	}
	at := im.start.Add(time.Duration(im.n) * step)
	im.n++
	im.wait = 0
	if im.step > 0 {
		if d := time.Until(at); d > 0 {
			t0 := time.Now()
			if err := sleep(ctx, d); err != nil {
				return time.Time{}, err
			}
			im.wait = time.Since(t0)
		}
	}
	return at, nil
}

func (im *images) Close() error { return nil }

// Waited reports the pacing wait of the last Read (none without fps).
func (im *images) Waited() (time.Duration, bool) { return im.wait, false }
