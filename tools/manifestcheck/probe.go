package main

import (
	_ "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	_ "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	_ "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	_ "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	_ "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	_ "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	_ "k8s.io/client-go/kubernetes/scheme"
	_ "knative.dev/eventing/pkg/apis/sources/v1"
	_ "knative.dev/eventing/pkg/apis/duck/v1"
	_ "knative.dev/serving/pkg/apis/serving/v1"
	_ "sigs.k8s.io/kustomize/api/krusty"
)

func main() {}
