package appliance

import (
	"context"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/pipeline"
)

// addPipelines builds the pipeline engine from the config and adds it to
// the lifecycle. ONNX Runtime is loaded only if a pipeline detects.
func (a *App) addPipelines(ctx context.Context) error {
	cfg := a.cfg.Pipeline
	if cfg.SnapshotDir == "" {
		cfg.SnapshotDir = filepath.Join(a.cfg.DataDir, "snapshots")
	}
	eng, err := pipeline.NewEngine(ctx, pipeline.Options{
		Config:        cfg,
		DB:            a.db,
		Logger:        a.log.With("component", "pipeline"),
		Library:       a.cfg.Inference.Library,
		Providers:     a.cfg.Inference.Providers,
		TensorRTCache: a.cfg.Inference.TensorRTCache,
		Models:        storeResolver{a.models},
		Publisher:     a.hubPublisher(),
	}, a.cfg.Pipelines)
	if err != nil {
		return err
	}
	a.pipelines = eng
	if a.pipelineSet, err = newPipelineSet(ctx, eng, a.db, a.cfg.Pipelines); err != nil {
		return err
	}
	a.add("pipelines", eng.Run)
	a.registry.MustRegister(pipelineCollector{eng})
	return nil
}

// Pipelines is the running pipeline engine.
func (a *App) Pipelines() *pipeline.Engine { return a.pipelines }

// pipelineCollector turns the engine's stats into Prometheus metrics at
// each scrape.
type pipelineCollector struct{ eng *pipeline.Engine }

var (
	pmFrames = prometheus.NewDesc("ledge_pipeline_frames_total",
		"Frames per pipeline by what happened to them: in (captured), out (processed), dropped (a newer frame replaced it), skipped_motion, skipped_rate.",
		[]string{"pipeline", "kind"}, nil)
	pmFPS = prometheus.NewDesc("ledge_pipeline_fps",
		"Recent frames per second captured (in) and processed (out).", []string{"pipeline", "direction"}, nil)
	pmDetections    = prometheus.NewDesc("ledge_pipeline_detections_total", "Objects detected (after class filters).", []string{"pipeline"}, nil)
	pmDetectErrors  = prometheus.NewDesc("ledge_pipeline_detect_errors_total", "Failed detector runs.", []string{"pipeline"}, nil)
	pmEvents        = prometheus.NewDesc("ledge_pipeline_events_total", "Events emitted.", []string{"pipeline"}, nil)
	pmEventsDropped = prometheus.NewDesc("ledge_pipeline_events_dropped_total", "Events dropped because the event queue was full.", []string{"pipeline"}, nil)
	pmEncodes       = prometheus.NewDesc("ledge_pipeline_jpeg_encodes_total", "JPEG encodes by purpose (viewers, snapshots).", []string{"pipeline", "purpose"}, nil)
	pmLatency       = prometheus.NewDesc("ledge_pipeline_stage_latency_seconds",
		"Latency per stage over the recent samples (capture, motion, detect, track, action, capture_to_action, capture_to_result).",
		[]string{"pipeline", "stage"}, nil)
	pmActions = prometheus.NewDesc("ledge_pipeline_action_events_total",
		"Events per action by result: delivered, failed (after retries), retried (attempts), dropped (queue full), limited (within the cooldown).",
		[]string{"pipeline", "action", "type", "result"}, nil)
	pmUp     = prometheus.NewDesc("ledge_pipeline_running", "1 if the pipeline runs.", []string{"pipeline"}, nil)
	pmSource = prometheus.NewDesc("ledge_pipeline_source_phase", "1 for the phase the source is in.", []string{"pipeline", "phase"}, nil)
	pmLoads  = prometheus.NewDesc("ledge_pipeline_detector_loads_total", "Models loaded into ONNX Runtime (shared models and reloads do not count again).", nil, nil)
)

// Describe sends nothing: the pipelines come and go, so the collector is
// unchecked.
func (pipelineCollector) Describe(chan<- *prometheus.Desc) {}

func (c pipelineCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(pmLoads, c.eng.DetectorLoads())
	for _, s := range c.eng.Stats() {
		p := s.Name
		counter(pmFrames, s.FramesIn, p, "in")
		counter(pmFrames, s.FramesOut, p, "out")
		counter(pmFrames, s.Dropped, p, "dropped")
		counter(pmFrames, s.SkippedMotion, p, "skipped_motion")
		counter(pmFrames, s.SkippedRate, p, "skipped_rate")
		gauge(pmFPS, s.FPSIn, p, "in")
		gauge(pmFPS, s.FPSOut, p, "out")
		counter(pmDetections, s.Detections, p)
		counter(pmDetectErrors, s.DetectErrors, p)
		counter(pmEvents, s.Events, p)
		counter(pmEventsDropped, s.EventsDropped, p)
		counter(pmEncodes, s.Encodes, p, "viewers")
		counter(pmEncodes, s.SnapshotEncodes, p, "snapshots")
		up := 0.0
		if s.Running {
			up = 1
		}
		gauge(pmUp, up, p)
		if s.Source.Phase != "" {
			gauge(pmSource, 1, p, string(s.Source.Phase))
		}
		for stage, l := range s.Latency {
			if l.Count == 0 {
				continue
			}
			ch <- prometheus.MustNewConstSummary(pmLatency, l.Count, l.Sum.Seconds(), map[float64]float64{
				0.5: l.P50.Seconds(), 0.95: l.P95.Seconds(), 0.99: l.P99.Seconds()}, p, stage)
		}
		for _, a := range s.Actions {
			counter(pmActions, a.Delivered, p, a.Name, a.Type, "delivered")
			counter(pmActions, a.Failed, p, a.Name, a.Type, "failed")
			counter(pmActions, a.Retries, p, a.Name, a.Type, "retried")
			counter(pmActions, a.Dropped, p, a.Name, a.Type, "dropped")
			counter(pmActions, a.Limited, p, a.Name, a.Type, "limited")
		}
	}
}
