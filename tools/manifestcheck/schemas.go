package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/kube-openapi/pkg/validation/spec"
	sigsyaml "sigs.k8s.io/yaml"
)

// Pinned sources of the official schemas. The Go module proxy serves them as module zips;
// `go mod download` fetches them into GOMODCACHE (under .local/) and the hashes below are checked.
const (
	// Knative 1.15: knative.dev/serving and knative.dev/eventing v0.42.2 are compiled in (go.mod).
	// knative.dev/operator v0.42.2 (the 1.15 operator) ships the release manifests of Knative
	// Serving 1.15.2, Eventing 1.15.0, net-kourier 1.15 and eventing-kafka-broker 1.15 (KafkaSource,
	// KafkaSink CRDs) in cmd/operator/kodata: that is where their CRD schemas come from, since
	// knative.dev/eventing-kafka-broker is not served by the proxy.
	operatorModule = "knative.dev/operator"
	operatorVer    = "v0.42.2"
	operatorHash   = "h1:wgAWYHwoSFmV+wPHCt5dZahHTHLy2VCM4G82PEo9iSc="
	// Kubernetes core types: api/openapi-spec/v3 of k8s.io/kubernetes.
	kubernetesModule = "k8s.io/kubernetes"
	kubernetesVer    = "v1.34.0"
	kubernetesHash   = "h1:NvUrwPAVB4W3mSOpJ/RtNGHWWYyUP/xPaX5rUSpzA0w="

	servingCRDs  = "cmd/operator/kodata/knative-serving/1.15.2/1-serving-crds.yaml"
	eventingCRDs = "cmd/operator/kodata/knative-eventing/1.15.0/1-eventing-crds.yaml"
	eventingCore = "cmd/operator/kodata/knative-eventing/1.15.0/2-eventing-core.yaml"
	kafkaCRDs    = "cmd/operator/kodata/eventing-source/1.15/kafka/eventing-kafka-controller.yaml"
)

// fetchModule downloads module@version through the Go module proxy (go mod download) and
// returns its directory, after checking the module zip's hash against the pinned one.
func fetchModule(path, version, hash string) (string, error) {
	tmp, err := os.MkdirTemp("", "manifestcheck-dl")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir = tmp // outside any module
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOFLAGS=-modcacherw")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Sum, Error string }
	_ = json.Unmarshal(out, &info)
	if err != nil || info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s %s", path, version, err, info.Error, stderr.String())
	}
	if info.Sum != hash {
		return "", fmt.Errorf("%s@%s: hash %s, pinned %s", path, version, info.Sum, hash)
	}
	return info.Dir, nil
}

// CRDVersion is one served version of a CRD with its validators, built the way the API server
// builds them (apiextensions-apiserver): structural schema, pruning, defaulting, OpenAPI and CEL.
type CRDVersion struct {
	Source     string
	Kind       string
	Structural *structuralschema.Structural
	Validator  apiservervalidation.SchemaValidator
	CEL        *cel.Validator
}

type CRDSet map[schema.GroupVersionKind]*CRDVersion

// LoadCRDs reads every CustomResourceDefinition of a multi-document YAML file.
func (s CRDSet) LoadCRDs(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		var head struct{ Kind, APIVersion string }
		if err := sigsyaml.Unmarshal(doc, &head); err != nil || head.Kind != "CustomResourceDefinition" {
			continue
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := sigsyaml.UnmarshalStrict(doc, &crd); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			internal := &apiextensions.JSONSchemaProps{}
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
				return err
			}
			ss, err := structuralschema.NewStructural(internal)
			if err != nil {
				return fmt.Errorf("%s %s: %w", crd.Name, v.Name, err)
			}
			validator, _, err := apiservervalidation.NewSchemaValidator(internal)
			if err != nil {
				return err
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			s[gvk] = &CRDVersion{
				Source:     filepath.Base(file),
				Kind:       crd.Spec.Names.Kind,
				Structural: ss,
				Validator:  validator,
				CEL:        cel.NewValidator(ss, true, celconfig.PerCallLimit),
			}
		}
	}
	return nil
}

// Validate checks an object against its CRD: unknown fields (what the API server would prune,
// or reject with field validation Strict), then defaulting, the OpenAPI schema and CEL rules.
func (v *CRDVersion) Validate(obj map[string]any) []string {
	var problems []string
	work := runtime.DeepCopyJSON(obj)
	for _, p := range structuralpruning.PruneWithOptions(work, v.Structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		problems = append(problems, fmt.Sprintf("unknown field %q", p))
	}
	structuraldefaulting.Default(work, v.Structural)
	for _, e := range apiservervalidation.ValidateCustomResource(nil, work, v.Validator) {
		problems = append(problems, e.Error())
	}
	if v.CEL != nil {
		errs, _ := v.CEL.Validate(context.Background(), nil, v.Structural, work, nil, celconfig.RuntimeCELCostBudget)
		for _, e := range errs {
			problems = append(problems, e.Error())
		}
	}
	return problems
}

// CoreSchemas holds the OpenAPI v3 schemas of the Kubernetes built-in types.
type CoreSchemas struct {
	components map[string]any
	byGVK      map[schema.GroupVersionKind]string
	cache      map[string]apiservervalidation.SchemaValidator
}

func LoadCoreSchemas(specDir string) (*CoreSchemas, error) {
	files, err := filepath.Glob(filepath.Join(specDir, "*_openapi.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no OpenAPI v3 documents in %s", specDir)
	}
	cs := &CoreSchemas{components: map[string]any{}, byGVK: map[schema.GroupVersionKind]string{}, cache: map[string]apiservervalidation.SchemaValidator{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Components struct {
				Schemas map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for name, sch := range doc.Components.Schemas {
			cs.components[name] = sch
			for _, g := range list(sch, "x-kubernetes-group-version-kind") {
				gvk := schema.GroupVersionKind{Group: str(g, "group"), Version: str(g, "version"), Kind: str(g, "kind")}
				if !strings.HasPrefix(name, "io.k8s.apimachinery.pkg.apis.meta.v1.") {
					cs.byGVK[gvk] = name
				}
			}
		}
	}
	return cs, nil
}

// inline replaces every $ref with the schema it points to (the core types are not recursive,
// except JSONSchemaProps, which no manifest here uses; depth is bounded anyway).
func (cs *CoreSchemas) inline(node any, depth int) any {
	if depth > 40 {
		return map[string]any{}
	}
	switch n := node.(type) {
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/components/schemas/")
			return cs.inline(cs.components[name], depth+1)
		}
		out := make(map[string]any, len(n))
		for k, v := range n {
			if k == "description" {
				continue
			}
			// format byte (base64) is checked by the strict decoding into the Go type, which
			// decodes it as the API server does (line breaks allowed, as kustomize writes them).
			if k == "format" && v == "byte" {
				continue
			}
			out[k] = cs.inline(v, depth)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, v := range n {
			out[i] = cs.inline(v, depth)
		}
		return out
	default:
		return node
	}
}

// Validator returns the OpenAPI validator of a built-in kind, or nil if the spec has none.
func (cs *CoreSchemas) Validator(gvk schema.GroupVersionKind) (apiservervalidation.SchemaValidator, error) {
	name, ok := cs.byGVK[gvk]
	if !ok {
		return nil, nil
	}
	if v, ok := cs.cache[name]; ok {
		return v, nil
	}
	js, err := json.Marshal(cs.inline(cs.components[name], 0))
	if err != nil {
		return nil, err
	}
	var s spec.Schema
	if err := json.Unmarshal(js, &s); err != nil {
		return nil, err
	}
	v := apiservervalidation.NewSchemaValidatorFromOpenAPI(&s)
	cs.cache[name] = v
	return v, nil
}
