package appliance

import (
	"context"

	"sync"
	"time"

	"ledge/internal/fault"
	"ledge/pipeline"
	"ledge/web"
)

// pipelinesAPI gives web the pipeline engine through web's interfaces
// (Pipelines, Frames, EventLog).
type pipelinesAPI struct {
	eng  *pipeline.Engine
	set  *pipelineSet
	hist *pipelineHistory
}

// view is one pipeline as the API shows it: its stats, who defines it
// (config: ledge.yaml, api: the dashboard, or deployment) and its spec
// with passwords in URLs masked (none for a stored spec that no longer
// reads).
func (p pipelinesAPI) view(st pipeline.Stats, owner string) web.Pipeline {
	v := web.Pipeline{PipelineStats: webPipelineStats(st), Owner: owner}
	if spec, err := p.eng.Spec(st.Name); err == nil {
		v.Spec = rawJSON(spec.Redacted())
	}
	return v
}

func (p pipelinesAPI) List(context.Context) ([]web.Pipeline, error) {
	out := []web.Pipeline{}
	for _, st := range p.eng.Stats() {
		out = append(out, p.view(st, p.set.owner(st.Name)))
	}
	for _, st := range p.set.brokenViews() {
		out = append(out, web.Pipeline{PipelineStats: webPipelineStats(st), Owner: "api"})
	}
	return out, nil
}

func (p pipelinesAPI) Get(_ context.Context, name string) (web.Pipeline, error) {
	st, err := p.eng.PipelineStats(name)
	if fault.Is(err, fault.NotFound) {
		for _, b := range p.set.brokenViews() {
			if b.Name == name {
				return web.Pipeline{PipelineStats: webPipelineStats(b), Owner: "api"}, nil
			}
		}
	}
	if err != nil {
		return web.Pipeline{}, err
	}
	v := p.view(st, p.set.owner(name))
	if v.Spec == nil {
		return web.Pipeline{}, fault.New(fault.NotFound, "no pipeline named %q", name)
	}
	return v, nil
}

func (p pipelinesAPI) Put(ctx context.Context, name string, body []byte) (web.Pipeline, error) {
	spec, err := pipeline.ParseSpec("", body)
	if err != nil {
		return web.Pipeline{}, fault.Wrap(fault.Invalid, err)
	}
	if name != "" && spec.Name != name {
		return web.Pipeline{}, fault.New(fault.Invalid, "the spec names pipeline %q, the URL %q", spec.Name, name)
	}
	o := p.set.owner(spec.Name)
	if o != "" && o != "api" {
		return web.Pipeline{}, fault.New(fault.Conflict, "pipeline %q is defined by %s; change it there", spec.Name, map[string]string{"config": "ledge.yaml", "deployment": "the deployment"}[o])
	}
	if o != "" && name == "" {
		// POST creates; replacing is PUT /pipelines/{name}.
		return web.Pipeline{}, fault.New(fault.Conflict, "pipeline %q exists; replace it with PUT /pipelines/%s (ledge pipelines replace %s FILE)", spec.Name, spec.Name, spec.Name)
	}
	if err := p.set.putLocal(ctx, spec); err != nil {
		return web.Pipeline{}, err
	}
	return p.Get(ctx, spec.Name)
}

func (p pipelinesAPI) Delete(ctx context.Context, name string) error {
	return p.set.removeLocal(ctx, name)
}
func (p pipelinesAPI) Start(ctx context.Context, name string) error  { return p.eng.Start(ctx, name) }
func (p pipelinesAPI) Stop(ctx context.Context, name string) error   { return p.eng.Stop(ctx, name) }
func (p pipelinesAPI) Reload(ctx context.Context, name string) error { return p.eng.Reload(ctx, name) }

func (p pipelinesAPI) History(name string) ([]web.PipelineSample, error) {
	if _, err := p.eng.Spec(name); err != nil {
		return nil, err
	}
	return p.hist.get(name), nil
}

func (p pipelinesAPI) Watch(name string, fps float64) (<-chan web.Frame, func(), error) {
	in, cancel, err := p.eng.Watch(name, fps)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan web.Frame, 1)
	done := make(chan struct{})
	go func() {
		defer close(out)
		for {
			select {
			case <-done:
				return
			case j, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- web.Frame{JPEG: j.Data, Seq: j.Frame, Time: j.Time}:
				case <-done:
					return
				default: // the viewer has not taken the last one: newest wins
					select {
					case <-out:
					default:
					}
					out <- web.Frame{JPEG: j.Data, Seq: j.Frame, Time: j.Time}
				}
			}
		}
	}()
	var once sync.Once
	return out, func() { once.Do(func() { cancel(); close(done) }) }, nil
}

func (p pipelinesAPI) Latest(name string) (web.Frame, error) {
	j, err := p.eng.LatestFrame(name)
	if err != nil {
		return web.Frame{}, err
	}
	return web.Frame{JPEG: j.Data, Seq: j.Frame, Time: j.Time}, nil
}

func (p pipelinesAPI) Events(ctx context.Context, q web.EventQuery) (web.EventPage, error) {
	log := p.eng.EventLog()
	if log == nil {
		return web.EventPage{}, fault.New(fault.Unavailable, "no event log")
	}
	ev, err := log.QueryTracks(ctx, pipeline.TrackQuery{From: q.From, To: q.To, Pipeline: q.Pipeline, Class: q.Class, Zone: q.Zone, Active: q.Active, BeforeID: q.BeforeID, Limit: q.Limit})
	return eventPage(ev, q.Limit), err
}

func (p pipelinesAPI) RawEvents(ctx context.Context, q web.EventQuery) (web.EventPage, error) {
	log := p.eng.EventLog()
	if log == nil {
		return web.EventPage{}, fault.New(fault.Unavailable, "no event log")
	}
	ev, err := log.Query(ctx, pipeline.Query{From: q.From, To: q.To, Pipeline: q.Pipeline, Type: q.Type, Class: q.Class, Zone: q.Zone, BeforeID: q.BeforeID, Limit: q.Limit})
	return eventPage(ev, q.Limit), err
}

// eventPage is a page of events and the cursor for the next (0 at the
// end).
func eventPage(ev []pipeline.Event, limit int) web.EventPage {
	page := web.EventPage{Events: make([]web.PipelineEvent, len(ev))}
	for i, e := range ev {
		page.Events[i] = webEvent(e)
	}
	if len(ev) == limit && len(ev) > 0 {
		page.Next = ev[len(ev)-1].ID
	}
	return page
}

func (p pipelinesAPI) SnapshotFile(name string) (string, error) {
	log := p.eng.EventLog()
	if log == nil {
		return "", fault.New(fault.Unavailable, "no event log")
	}
	return log.SnapshotPath(name)
}

// pipelineHistory samples every pipeline's rates and latency for the
// dashboard's charts: one sample every historyEvery, the last hour kept in
// memory. Safe for concurrent use.
type pipelineHistory struct {
	eng *pipeline.Engine

	mu      sync.Mutex // guards samples
	samples map[string][]web.PipelineSample
}

const (
	historyEvery = 5 * time.Second
	historyKeep  = time.Hour
)

func newPipelineHistory(eng *pipeline.Engine) *pipelineHistory {
	return &pipelineHistory{eng: eng, samples: map[string][]web.PipelineSample{}}
}

// Run samples until ctx ends (the "pipeline-history" component).
func (h *pipelineHistory) Run(ctx context.Context) error {
	tick := time.NewTicker(historyEvery)
	defer tick.Stop()
	h.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			h.sample(now)
		}
	}
}

func (h *pipelineHistory) sample(now time.Time) {
	stats := h.eng.Stats()
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	for _, st := range stats {
		seen[st.Name] = true
		l := st.Latency[pipeline.StageCaptureToResult]
		s := append(h.samples[st.Name], web.PipelineSample{Time: now, FPSIn: st.FPSIn, FPSOut: st.FPSOut,
			P50: float64(l.P50) / float64(time.Millisecond), P99: float64(l.P99) / float64(time.Millisecond)})
		for len(s) > 0 && now.Sub(s[0].Time) > historyKeep {
			s = s[1:]
		}
		h.samples[st.Name] = s
	}
	for name := range h.samples {
		if !seen[name] {
			delete(h.samples, name)
		}
	}
}

// get returns name's samples plus one taken now, so a chart has a point
// from the moment a pipeline starts.
func (h *pipelineHistory) get(name string) []web.PipelineSample {
	h.mu.Lock()
	out := append([]web.PipelineSample{}, h.samples[name]...)
	h.mu.Unlock()
	if st, err := h.eng.PipelineStats(name); err == nil {
		l := st.Latency[pipeline.StageCaptureToResult]
		out = append(out, web.PipelineSample{Time: time.Now(), FPSIn: st.FPSIn, FPSOut: st.FPSOut,
			P50: float64(l.P50) / float64(time.Millisecond), P99: float64(l.P99) / float64(time.Millisecond)})
	}
	return out
}
