package appliance

import (
	"context"
	"encoding/json"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/agent"
	"ledge/inference"
	"ledge/models"
	"ledge/web"
)

// newModels opens the model store in <dataDir>/models, registers it to run
// (before the agent, which hands it the models section), its metrics and
// its events on the dashboard's feed, and adds the agent's "models"
// section owner to sections.
func (a *App) newModels(ctx context.Context, sections map[string]agent.Section) error {
	trusted, err := agent.ParseTrustedKeys(a.cfg.Agent.TrustedKeys)
	if err != nil {
		return err // Config.Validate said so already
	}
	keys := make([]models.TrustedKey, len(trusted))
	for i, k := range trusted {
		keys[i] = models.TrustedKey{ID: k.ID, Key: k.Key}
	}
	var kinds []string
	for _, k := range inference.Kinds() {
		kinds = append(kinds, string(k))
	}
	s, err := models.Open(ctx, models.Options{
		Config:      a.cfg.Models,
		DB:          a.db,
		Dir:         filepath.Join(a.cfg.DataDir, "models"),
		DataDir:     a.cfg.DataDir,
		Logger:      a.log.With("component", "models"),
		TrustedKeys: keys,
		Kinds:       kinds,
	})
	if err != nil {
		return err
	}
	a.models = s
	a.add("models", s.Run)
	a.registry.MustRegister(modelsCollector{s})
	sections["models"] = modelsSection{s}
	return nil
}

// Models is the model store.
func (a *App) Models() *models.Store { return a.models }

// modelEvents forwards the store's events (state changes, download
// progress) to the dashboard as "model.state" and "model.progress".
func (a *App) modelEvents(ctx context.Context, publish func(web.Event)) {
	events, cancel := a.models.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			publish(web.Event{Type: ev.Type, Time: ev.Time, Data: ev})
		}
	}
}

// modelsSection owns the models section of deployments for the agent.
type modelsSection struct{ s *models.Store }

func (m modelsSection) Validate(ctx context.Context, raw json.RawMessage) error {
	_, err := m.s.CheckSection(ctx, raw)
	return err
}

func (m modelsSection) Plan(ctx context.Context, raw json.RawMessage) ([]agent.Change, error) {
	specs, err := m.s.CheckSection(ctx, raw)
	if err != nil {
		return nil, err
	}
	items, err := m.s.Plan(ctx, specs)
	if err != nil {
		return nil, err
	}
	out := make([]agent.Change, len(items))
	for i, it := range items {
		out[i] = agent.Change{Kind: "model", Name: it.Name, Action: agent.Action(it.Action), Detail: it.Detail}
	}
	return out, nil
}

// Apply records what the deployment asks for; downloads and activations
// run in the background and show in Report.
func (m modelsSection) Apply(ctx context.Context, raw json.RawMessage) error {
	specs, err := m.s.CheckSection(ctx, raw)
	if err != nil {
		return err
	}
	return m.s.SetDesired(ctx, specs)
}

func (m modelsSection) Report() agent.SectionReport {
	r := m.s.Report()
	rep := agent.SectionReport{State: r.State, Detail: r.Detail}
	if len(r.Items) > 0 {
		rep.Items = make(map[string]any, len(r.Items))
		for n, it := range r.Items {
			rep.Items[n] = it
			rep.Progress += it.Bytes // a download moving keeps the deployment alive
		}
	}
	return rep
}

// modelsAPI gives web the store through web's own interface.
type modelsAPI struct{ s *models.Store }

func (x modelsAPI) List(ctx context.Context) ([]web.Model, error) {
	ms, err := x.s.List(ctx)
	return each(ms, webModel), err
}
func (x modelsAPI) Get(ctx context.Context, name string) (web.Model, error) {
	m, err := x.s.Get(ctx, name)
	return webModel(m), err
}
func (x modelsAPI) Pull(ctx context.Context, spec []byte, activate bool) (web.ModelVersion, error) {
	sp, err := models.ParseSpec(spec)
	if err != nil {
		return web.ModelVersion{}, err
	}
	v, err := x.s.Pull(ctx, sp, activate)
	return webModelVersion(v), err
}
func (x modelsAPI) Activate(ctx context.Context, name, version string) (web.ModelVersion, error) {
	v, err := x.s.Activate(ctx, name, version)
	return webModelVersion(v), err
}
func (x modelsAPI) Rollback(ctx context.Context, name string) (web.ModelVersion, error) {
	v, err := x.s.Rollback(ctx, name)
	return webModelVersion(v), err
}

// modelsCollector exposes the store's counters on /metrics.
type modelsCollector struct{ s *models.Store }

var (
	mmDownloads   = prometheus.NewDesc("ledge_models_downloads_total", "Model downloads by result: started, completed, failed.", []string{"result"}, nil)
	mmBytes       = prometheus.NewDesc("ledge_models_downloaded_bytes_total", "Model bytes downloaded.", nil, nil)
	mmActivations = prometheus.NewDesc("ledge_models_activations_total", "Model activations by result: ok, failed (did not load or warm).", []string{"result"}, nil)
	mmCollected   = prometheus.NewDesc("ledge_models_collected_total", "Model versions removed by retention or the quota.", nil, nil)
	mmStored      = prometheus.NewDesc("ledge_models_stored_bytes", "Bytes of stored models and partial downloads.", nil, nil)
	mmQuota       = prometheus.NewDesc("ledge_models_quota_bytes", "models.quotaBytes.", nil, nil)
	mmVersions    = prometheus.NewDesc("ledge_models_versions", "Model versions in the store.", nil, nil)
)

func (modelsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mmDownloads, mmBytes, mmActivations, mmCollected, mmStored, mmQuota, mmVersions} {
		ch <- d
	}
}

func (c modelsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(mmDownloads, st.DownloadsStarted, "started")
	counter(mmDownloads, st.DownloadsCompleted, "completed")
	counter(mmDownloads, st.DownloadsFailed, "failed")
	counter(mmBytes, st.DownloadedBytes)
	counter(mmActivations, st.Activations, "ok")
	counter(mmActivations, st.ActivationFailures, "failed")
	counter(mmCollected, st.Collected)
	gauge(mmStored, st.StoredBytes)
	gauge(mmQuota, st.QuotaBytes)
	gauge(mmVersions, int64(st.Versions))
}
