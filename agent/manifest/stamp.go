package manifest

import (
	"encoding/json"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// WithVersion returns the manifest with its deployment version set to
// version: the top-level "version" of a native manifest, the $ledge
// module's desired "version" of an Azure one (added when missing). A
// fleet controller gives each device a version above the last it had
// (remote sources only apply a newer one). JSON stays JSON (comments
// dropped), YAML stays YAML; the result is checked by Parse.
func WithVersion(data []byte, version string) ([]byte, error) {
	if e := checkVersion(version); e != "" {
		return nil, errors.New(e)
	}
	src, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	root := src.root.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, errors.New("a manifest is a mapping (JSON object) at the top level")
	}
	target := root
	if _, _, _, mc := azureDeployment(root); mc != nil {
		target = ensureMap(ensureMap(mc, "$ledge"), "properties.desired")
	}
	setScalar(target, "version", version)
	var out []byte
	if src.json {
		var v any
		if err := root.Decode(&v); err != nil {
			return nil, err
		}
		if v, err = jsonable(v, 0); err != nil {
			return nil, err
		}
		out, err = json.MarshalIndent(v, "", "  ")
	} else {
		out, err = yaml.Marshal(root)
	}
	if err != nil {
		return nil, err
	}
	m, err := Parse(out)
	if err != nil {
		return nil, fmt.Errorf("manifest with version %q: %w", version, err)
	}
	if m.Version != version {
		return nil, fmt.Errorf("manifest with version %q reads as version %q", version, m.Version)
	}
	return out, nil
}

// ensureMap returns n's mapping under key, added when missing.
func ensureMap(n *yaml.Node, key string) *yaml.Node {
	if c := child(n, key); c != nil && c.Kind == yaml.MappingNode {
		return c
	}
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = c
			return c
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, c)
	return c
}

// setScalar sets n's key to a string value.
func setScalar(n *yaml.Node, key, value string) {
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value, Style: yaml.DoubleQuotedStyle}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = v
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
