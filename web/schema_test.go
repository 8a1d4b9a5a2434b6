package web

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// responseTypes are the API's response types, by their schema's name in
// openapi.json (components.schemas): the JSON contract of the API.
var responseTypes = map[string]reflect.Type{
	"Model":             reflect.TypeFor[Model](),
	"ModelVersion":      reflect.TypeFor[ModelVersion](),
	"ModelProgress":     reflect.TypeFor[ModelProgress](),
	"Pipeline":          reflect.TypeFor[Pipeline](),
	"SourceState":       reflect.TypeFor[SourceState](),
	"StageLatency":      reflect.TypeFor[StageLatency](),
	"ActionStats":       reflect.TypeFor[ActionStats](),
	"PipelineSample":    reflect.TypeFor[PipelineSample](),
	"EventPage":         reflect.TypeFor[EventPage](),
	"PipelineEvent":     reflect.TypeFor[PipelineEvent](),
	"Box":               reflect.TypeFor[Box](),
	"DeploymentPlan":    reflect.TypeFor[DeploymentPlan](),
	"PlanChange":        reflect.TypeFor[PlanChange](),
	"Elevation":         reflect.TypeFor[Elevation](),
	"SigningReport":     reflect.TypeFor[SigningReport](),
	"AppliedDeployment": reflect.TypeFor[AppliedDeployment](),
	"Deployment":        reflect.TypeFor[Deployment](),
	"AgentReport":       reflect.TypeFor[AgentReport](),
	"AgentVersion":      reflect.TypeFor[AgentVersion](),
	"DesiredStatus":     reflect.TypeFor[DesiredStatus](),
	"AgentRuntime":      reflect.TypeFor[AgentRuntime](),
	"RuntimeSettings":   reflect.TypeFor[RuntimeSettings](),
	"RuntimePlatform":   reflect.TypeFor[RuntimePlatform](),
	"ModuleReport":      reflect.TypeFor[ModuleReport](),
	"ModuleHubLink":     reflect.TypeFor[ModuleHubLink](),
	"EnvValue":          reflect.TypeFor[EnvValue](),
	"PullProgress":      reflect.TypeFor[PullProgress](),
	"DeploymentReport":  reflect.TypeFor[DeploymentReport](),
	"RollbackReport":    reflect.TypeFor[RollbackReport](),
	"Rejection":         reflect.TypeFor[Rejection](),
	"SectionReport":     reflect.TypeFor[SectionReport](),
	"EngineReport":      reflect.TypeFor[EngineReport](),
	"HubStats":          reflect.TypeFor[HubStats](),
	"HubPorts":          reflect.TypeFor[HubPorts](),
	"HubClient":         reflect.TypeFor[HubClient](),
	"HubRates":          reflect.TypeFor[HubRates](),
	"HubQueue":          reflect.TypeFor[HubQueue](),
	"HubRelay":          reflect.TypeFor[HubRelay](),
	"HubUpstream":       reflect.TypeFor[HubUpstream](),
	"HubIdentity":       reflect.TypeFor[HubIdentity](),
	"HubCreated":        reflect.TypeFor[HubCreated](),
	"HubTwin":           reflect.TypeFor[HubTwin](),
}

// jsonField is one field of a struct's JSON.
type jsonField struct {
	name     string
	typ      reflect.Type
	optional bool // omitempty or omitzero
}

// jsonFields lists t's JSON fields in order, the fields of embedded
// structs in their place.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, typ: f.Type,
			optional: strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")})
	}
	return out
}

// schemaOf is the schema a value of type t has in openapi.json, without
// descriptions: a $ref for a response type, inline otherwise.
func schemaOf(t reflect.Type) map[string]any {
	for name, rt := range responseTypes {
		if rt == t {
			return map[string]any{"$ref": "#/components/schemas/" + name}
		}
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return map[string]any{"type": "string", "format": "date-time"}
	case t == reflect.TypeFor[time.Duration]():
		return map[string]any{"type": "integer", "format": "nanoseconds"}
	case t == reflect.TypeFor[json.RawMessage]():
		return map[string]any{} // any JSON
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		return objectSchema(t)
	}
	panic("no schema for " + t.String())
}

// objectSchema is the schema of struct type t.
func objectSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for _, f := range jsonFields(t) {
		props[f.name] = schemaOf(f.typ)
		if !f.optional {
			required = append(required, f.name)
		}
	}
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}
