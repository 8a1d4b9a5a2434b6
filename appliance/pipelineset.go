package appliance

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"time"

	"ledge/internal/fault"
	"ledge/pipeline"
)

// pipelineSet is what the pipeline engine runs: three layers of specs,
// each owned by one writer, whose union is applied whole.
//
//   - ledge.yaml's pipelines (fixed while ledge runs);
//   - pipelines created from the dashboard or the API, kept in SQLite so
//     they survive restarts;
//   - the current deployment's pipelines (the agent's section).
//
// A name belongs to one layer: a layer may not redefine another's
// pipeline. Safe for concurrent use.
type pipelineSet struct {
	eng *pipeline.Engine
	db  *sql.DB

	mu       sync.Mutex // guards local, deployed and broken; held while applying
	config   []pipeline.Spec
	local    []pipeline.Spec
	deployed []pipeline.Spec
	// broken are stored pipelines that could not be started at all (their
	// spec no longer reads, or clashes with ledge.yaml).
	broken []brokenPipeline
}

// newPipelineSet loads the API-created pipelines and starts config +
// local.
func newPipelineSet(ctx context.Context, eng *pipeline.Engine, db *sql.DB, config []pipeline.Spec) (*pipelineSet, error) {
	ps := &pipelineSet{eng: eng, db: db, config: config}
	rows, err := db.QueryContext(ctx, `SELECT name, spec FROM appliance_pipelines ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("load pipelines: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, text string
		if err := rows.Scan(&name, &text); err != nil {
			return nil, fmt.Errorf("load pipelines: %w", err)
		}
		s, err := pipeline.ParseSpec("stored pipeline "+name, []byte(text))
		if err != nil {
			ps.broken = append(ps.broken, brokenPipeline{name: name, reason: fmt.Sprintf(
				"%v; fix it on the Pipelines page (PUT /api/v1/pipelines/%s) or delete it (DELETE /api/v1/pipelines/%s)", err, name, name)})
			continue
		}
		ps.local = append(ps.local, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ps.local) > 0 {
		all, err := ps.union(ps.local, ps.deployed)
		if err != nil {
			// A stored pipeline that clashes with ledge.yaml: ledge.yaml's
			// runs, the stored ones wait for a fix.
			for _, s := range ps.local {
				ps.broken = append(ps.broken, brokenPipeline{name: s.Name, reason: fmt.Sprintf("not started: %v", err)})
			}
			ps.local = nil
		} else if err := eng.ApplyKeepGoing(ctx, all); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// brokenPipeline is a stored pipeline that could not even be read; it is
// shown as failed until it is fixed or deleted.
type brokenPipeline struct{ name, reason string }

// brokenViews returns the broken stored pipelines as failed pipelines.
func (ps *pipelineSet) brokenViews() []pipeline.Stats {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []pipeline.Stats
	for _, b := range ps.broken {
		out = append(out, pipeline.Stats{Name: b.name, State: pipeline.StateFailed, Reason: b.reason})
	}
	return out
}

// union merges the layers, refusing a name defined in two of them.
func (ps *pipelineSet) union(local, deployed []pipeline.Spec) ([]pipeline.Spec, error) {
	owner := map[string]string{}
	var all []pipeline.Spec
	for _, layer := range []struct {
		name  string
		specs []pipeline.Spec
	}{{"ledge.yaml", ps.config}, {"the dashboard/API", local}, {"the deployment", deployed}} {
		for _, s := range layer.specs {
			if o, dup := owner[s.Name]; dup && o != layer.name {
				return nil, fault.New(fault.Conflict, "pipeline %q is defined by %s; %s cannot redefine it", s.Name, o, layer.name)
			}
			owner[s.Name] = layer.name
			all = append(all, s)
		}
	}
	if err := pipeline.ValidateSpecs(all, "pipelines"); err != nil {
		return nil, fault.Wrap(fault.Invalid, err)
	}
	return all, nil
}

// owner says which layer defines name ("" for none).
func (ps *pipelineSet) owner(name string) string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, l := range []struct {
		name  string
		specs []pipeline.Spec
	}{{"config", ps.config}, {"api", ps.local}, {"deployment", ps.deployed}} {
		for _, s := range l.specs {
			if s.Name == name {
				return l.name
			}
		}
	}
	return ""
}

// putLocal adds or replaces a dashboard/API pipeline: the engine runs it
// (reloading a changed one), then it is stored.
func (ps *pipelineSet) putLocal(ctx context.Context, s pipeline.Spec) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	local := slices.DeleteFunc(slices.Clone(ps.local), func(x pipeline.Spec) bool { return x.Name == s.Name })
	local = append(local, s)
	all, err := ps.union(local, ps.deployed)
	if err != nil {
		return err
	}
	if err := ps.eng.Apply(ctx, all); err != nil {
		return err
	}
	text, err := s.Encode() // with the actions' passwords and headers
	if err != nil {
		return err
	}
	if _, err := ps.db.ExecContext(ctx, `INSERT INTO appliance_pipelines (name, spec, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at`,
		s.Name, string(text), time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("store pipeline %q: %w", s.Name, err)
	}
	ps.local = local
	ps.broken = slices.DeleteFunc(ps.broken, func(b brokenPipeline) bool { return b.name == s.Name })
	return nil
}

// removeLocal stops and forgets a dashboard/API pipeline.
func (ps *pipelineSet) removeLocal(ctx context.Context, name string) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	i := slices.IndexFunc(ps.local, func(x pipeline.Spec) bool { return x.Name == name })
	if i < 0 && slices.ContainsFunc(ps.broken, func(b brokenPipeline) bool { return b.name == name }) {
		if _, err := ps.db.ExecContext(ctx, `DELETE FROM appliance_pipelines WHERE name = ?`, name); err != nil {
			return fmt.Errorf("forget pipeline %q: %w", name, err)
		}
		ps.broken = slices.DeleteFunc(ps.broken, func(b brokenPipeline) bool { return b.name == name })
		return nil
	}
	if i < 0 {
		for _, s := range ps.config {
			if s.Name == name {
				return fault.New(fault.Conflict, "pipeline %q is defined in ledge.yaml: remove it there", name)
			}
		}
		for _, s := range ps.deployed {
			if s.Name == name {
				return fault.New(fault.Conflict, "pipeline %q belongs to the deployment: deploy a manifest without it", name)
			}
		}
		return fault.New(fault.NotFound, "no pipeline %q", name)
	}
	local := slices.Delete(slices.Clone(ps.local), i, i+1)
	all, err := ps.union(local, ps.deployed)
	if err != nil {
		return err
	}
	if err := ps.eng.Apply(ctx, all); err != nil {
		return err
	}
	if _, err := ps.db.ExecContext(ctx, `DELETE FROM appliance_pipelines WHERE name = ?`, name); err != nil {
		return fmt.Errorf("forget pipeline %q: %w", name, err)
	}
	ps.local = local
	return nil
}

// withDeployed returns what would run with deployed as the deployment's
// pipelines.
func (ps *pipelineSet) withDeployed(deployed []pipeline.Spec) ([]pipeline.Spec, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.union(ps.local, deployed)
}

// setDeployed applies the deployment's pipelines.
func (ps *pipelineSet) setDeployed(ctx context.Context, deployed []pipeline.Spec) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	all, err := ps.union(ps.local, deployed)
	if err != nil {
		return err
	}
	if err := ps.eng.Apply(ctx, all); err != nil {
		return err
	}
	ps.deployed = deployed
	return nil
}
