package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// Schemas is everything objects are validated against.
type Schemas struct {
	CRDs CRDSet
	Core *CoreSchemas
	// Knative Eventing's feature flags as its 1.15 release configures them (config-features).
	EventingFeatures feature.Flags
}

// LoadEventingFeatures reads the config-features ConfigMap of the Eventing release manifest.
func LoadEventingFeatures(file string) (feature.Flags, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no config-features ConfigMap", file)
		}
		if err != nil {
			return nil, err
		}
		var cm corev1.ConfigMap
		if err := sigsyaml.Unmarshal(doc, &cm); err != nil || cm.Kind != "ConfigMap" || cm.Name != "config-features" {
			continue
		}
		return feature.NewFlagsConfigFromConfigMap(&cm)
	}
}

func (s *Schemas) knativeContext() context.Context {
	ctx := apis.WithinCreate(context.Background())
	return feature.ToContext(ctx, s.EventingFeatures)
}

// ValidateObject validates one rendered object by its apiVersion and kind.
func (s *Schemas) ValidateObject(o *Object, r *Report) {
	where := o.ID()
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil || o.Kind == "" {
		r.Errorf(where, "bad apiVersion/kind %q/%q", o.APIVersion, o.Kind)
		return
	}
	gvk := gv.WithKind(o.Kind)
	s.validateMetadata(o, r)

	// Knative types: strict decoding into the Go types of the pinned release, then the same
	// SetDefaults and Validate its admission webhooks run; then the CRD schema as well.
	ctx := s.knativeContext()
	switch gvk {
	case servingv1.SchemeGroupVersion.WithKind("Service"):
		var svc servingv1.Service
		if err := strictDecode(o.JSON, &svc); err != nil {
			r.Errorf(where, "strict decoding into knative.dev/serving v1 Service: %v", err)
			return
		}
		svc.SetDefaults(ctx)
		if fe := svc.Validate(ctx); fe != nil {
			r.Errorf(where, "Knative Serving validation: %v", fe)
			return
		}
		r.Pass("knative Service: strict decode + SetDefaults + Validate")
	case sourcesv1.SchemeGroupVersion.WithKind("PingSource"):
		var ps sourcesv1.PingSource
		if err := strictDecode(o.JSON, &ps); err != nil {
			r.Errorf(where, "strict decoding into knative.dev/eventing sources/v1 PingSource: %v", err)
			return
		}
		ps.SetDefaults(ctx)
		if fe := ps.Validate(ctx); fe != nil {
			r.Errorf(where, "Knative Eventing validation: %v", fe)
			return
		}
		r.Pass("knative PingSource: strict decode + SetDefaults + Validate")
	case schema.GroupVersionKind{Group: "sources.knative.dev", Version: "v1beta1", Kind: "KafkaSource"},
		schema.GroupVersionKind{Group: "eventing.knative.dev", Version: "v1alpha1", Kind: "KafkaSink"}:
		// The Kafka types' Go module is not served; their shared duck types are validated with
		// the Go types of knative.dev/pkg and knative.dev/eventing, the rest by the CRD schema.
		s.validateDucks(o, r, ctx)
	}

	if crd, ok := s.CRDs[gvk]; ok {
		if problems := crd.Validate(o.Map); len(problems) > 0 {
			for _, p := range problems {
				r.Errorf(where, "CRD schema (%s): %s", crd.Source, p)
			}
			return
		}
		r.Pass("CRD schema " + gvk.Group + "/" + gvk.Version + " " + gvk.Kind)
		return
	}

	// Built-in kinds: strict decoding into the k8s.io/api Go type, then its OpenAPI v3 schema.
	if scheme.Scheme.Recognizes(gvk) {
		typed, err := scheme.Scheme.New(gvk)
		if err != nil {
			r.Errorf(where, "%v", err)
			return
		}
		if err := strictDecode(o.JSON, typed); err != nil {
			r.Errorf(where, "strict decoding into k8s.io/api %s: %v", gvk, err)
			return
		}
		v, err := s.Core.Validator(gvk)
		if err != nil {
			r.Errorf(where, "OpenAPI schema: %v", err)
			return
		}
		if v == nil {
			r.Errorf(where, "no OpenAPI schema for %s in Kubernetes %s", gvk, kubernetesVer)
			return
		}
		if errs := apiservervalidation.ValidateCustomResource(nil, o.Map, v); len(errs) > 0 {
			for _, e := range errs {
				r.Errorf(where, "Kubernetes OpenAPI schema: %v", e)
			}
			return
		}
		errs, known, err := validateBuiltin(gvk, typed)
		if err != nil {
			r.Errorf(where, "%v", err)
			return
		}
		if !known {
			r.Errorf(where, "no API server validation wired for %s: add it to corevalidation.go", gvk)
			return
		}
		if len(errs) > 0 {
			for _, e := range errs {
				r.Errorf(where, "Kubernetes validation: %v", e)
			}
			return
		}
		r.Pass("k8s " + gvk.Kind + ": strict decode + OpenAPI v3 + API server validation")
		return
	}
	r.Errorf(where, "unknown apiVersion/kind %s/%s: no schema in the pinned Kubernetes, Knative or Strimzi releases", o.APIVersion, o.Kind)
}

func (s *Schemas) validateMetadata(o *Object, r *Report) {
	where := o.ID()
	meta := mapAt(o.Map, "metadata")
	if o.Name == "" {
		r.Errorf(where, "metadata.name is missing")
		return
	}
	fld := field.NewPath("metadata")
	errs := field.ErrorList{}
	for _, msg := range apimachineryvalidation.NameIsDNSSubdomain(o.Name, false) {
		errs = append(errs, field.Invalid(fld.Child("name"), o.Name, msg))
	}
	labels := map[string]string{}
	for k, v := range mapAt(meta, "labels") {
		s, ok := v.(string)
		if !ok {
			errs = append(errs, field.Invalid(fld.Child("labels").Key(k), v, "must be a string"))
		}
		labels[k] = s
	}
	errs = append(errs, metav1validation.ValidateLabels(labels, fld.Child("labels"))...)
	annotations := map[string]string{}
	for k, v := range mapAt(meta, "annotations") {
		s, ok := v.(string)
		if !ok {
			errs = append(errs, field.Invalid(fld.Child("annotations").Key(k), v, "must be a string"))
		}
		annotations[k] = s
	}
	errs = append(errs, apimachineryvalidation.ValidateAnnotations(annotations, fld.Child("annotations"))...)
	for _, e := range errs {
		r.Errorf(where, "%v", e)
	}
}

// validateDucks strictly decodes and validates the sink and delivery of a Kafka resource.
func (s *Schemas) validateDucks(o *Object, r *Report, ctx context.Context) {
	where := o.ID()
	if sink := mapAt(o.Map, "spec", "sink"); sink != nil {
		js, _ := sigsyaml.Marshal(sink)
		var d duckv1.Destination
		if err := sigsyaml.UnmarshalStrict(js, &d); err != nil {
			r.Errorf(where, "spec.sink: %v", err)
		} else if fe := d.Validate(ctx); fe != nil {
			r.Errorf(where, "spec.sink: %v", fe)
		}
	}
	if delivery := mapAt(o.Map, "spec", "delivery"); delivery != nil {
		js, _ := sigsyaml.Marshal(delivery)
		var d eventingduckv1.DeliverySpec
		if err := sigsyaml.UnmarshalStrict(js, &d); err != nil {
			r.Errorf(where, "spec.delivery: %v", err)
		} else if fe := d.Validate(ctx); fe != nil {
			r.Errorf(where, "spec.delivery: %v", fe)
		}
	}
	r.Pass("knative duck types (sink, delivery): strict decode + Validate")
}
