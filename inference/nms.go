package inference

import "slices"

// NMS applies class-aware greedy non-maximum suppression in place: among
// detections of the same class, a box whose IoU with a higher-scoring kept
// box exceeds iou is dropped. The result is sorted by descending score and
// holds at most maxKeep detections (no limit when maxKeep <= 0). It reuses
// the backing array of dets.
func NMS(dets []Detection, iou float32, maxKeep int) []Detection {
	slices.SortStableFunc(dets, func(a, b Detection) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return 0
	})
	kept := dets[:0]
	for i := range dets {
		d := dets[i]
		suppressed := false
		for _, k := range kept {
			if k.ClassID == d.ClassID && k.Box.IoU(d.Box) > iou {
				suppressed = true
				break
			}
		}
		if suppressed {
			continue
		}
		kept = append(kept, d)
		if maxKeep > 0 && len(kept) == maxKeep {
			break
		}
	}
	return kept
}
