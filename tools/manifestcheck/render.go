package main

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one rendered resource, as JSON and as a generic map.
type Object struct {
	Source     string // the kustomization it came from
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	JSON       []byte
	Map        map[string]any
}

func (o *Object) ID() string {
	ns := o.Namespace
	if ns != "" {
		ns += "/"
	}
	return fmt.Sprintf("%s %s %s%s", o.Source, o.Kind, ns, o.Name)
}

// Render runs `kustomize build dir` in-process (kustomize/api krusty, load restrictions on).
func Render(dir, label string) ([]*Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*Object
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			return nil, err
		}
		js, err := sigsyaml.YAMLToJSON(y)
		if err != nil {
			return nil, err
		}
		m, err := decodeMap(js)
		if err != nil {
			return nil, err
		}
		o := &Object{Source: label, JSON: js, Map: m}
		o.APIVersion, _ = m["apiVersion"].(string)
		o.Kind, _ = m["kind"].(string)
		o.Name = str(m, "metadata", "name")
		o.Namespace = str(m, "metadata", "namespace")
		out = append(out, o)
	}
	return out, nil
}
