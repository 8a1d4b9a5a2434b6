package appliance

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newRegistry returns the registry behind /metrics: Go runtime and process
// metrics plus ledge_build_info. Components' counters are added as
// collectors that read their Go stats APIs, so the components themselves do
// not depend on Prometheus.
func newRegistry(b BuildInfo) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "ledge_build_info",
			Help:        "Build of the running ledge (value is always 1).",
			ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit},
		}, func() float64 { return 1 }),
	)
	return r
}

func metricsHandler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}
