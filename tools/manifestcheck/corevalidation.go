package main

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	"k8s.io/kubernetes/pkg/apis/apps"
	_ "k8s.io/kubernetes/pkg/apis/apps/install"
	appsvalidation "k8s.io/kubernetes/pkg/apis/apps/validation"
	"k8s.io/kubernetes/pkg/apis/batch"
	_ "k8s.io/kubernetes/pkg/apis/batch/install"
	batchvalidation "k8s.io/kubernetes/pkg/apis/batch/validation"
	core "k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
	corevalidation "k8s.io/kubernetes/pkg/apis/core/validation"
)

// The API server's own validation of the built-in kinds (k8s.io/kubernetes v1.29.2, the
// Kubernetes minor of Knative 1.15's dependencies): defaults applied, converted to the internal
// types, then the Validate<Kind> functions its REST strategies call on create. This is what
// catches invalid values (an unknown imagePullPolicy, a port out of range, a bad selector...),
// which the published OpenAPI documents do not describe.
func validateBuiltin(gvk schema.GroupVersionKind, typed runtime.Object) (field.ErrorList, bool, error) {
	obj := typed.DeepCopyObject()
	legacyscheme.Scheme.Default(obj)
	internal, err := legacyscheme.Scheme.ConvertToVersion(obj, schema.GroupVersion{Group: gvk.Group, Version: runtime.APIVersionInternal})
	if err != nil {
		return nil, false, fmt.Errorf("converting to the internal version: %w", err)
	}
	podOpts := corevalidation.PodValidationOptions{}
	switch o := internal.(type) {
	case *core.ConfigMap:
		return corevalidation.ValidateConfigMap(o), true, nil
	case *core.Secret:
		return corevalidation.ValidateSecret(o), true, nil
	case *core.Service:
		prepareServiceForCreate(o)
		return corevalidation.ValidateService(o), true, nil
	case *core.Namespace:
		return corevalidation.ValidateNamespace(o), true, nil
	case *core.PersistentVolumeClaim:
		return corevalidation.ValidatePersistentVolumeClaim(o, corevalidation.PersistentVolumeClaimSpecValidationOptions{}), true, nil
	case *apps.Deployment:
		return appsvalidation.ValidateDeployment(o, podOpts), true, nil
	case *apps.StatefulSet:
		return appsvalidation.ValidateStatefulSet(o, podOpts), true, nil
	case *apps.DaemonSet:
		return appsvalidation.ValidateDaemonSet(o, podOpts), true, nil
	case *batch.Job:
		prepareJobForCreate(o)
		return batchvalidation.ValidateJob(o, batchvalidation.JobValidationOptions{PodValidationOptions: podOpts, RequirePrefixedLabels: true}), true, nil
	}
	return nil, false, nil
}

// prepareServiceForCreate does what the Service REST storage does before validating a new Service:
// a LoadBalancer that keeps client addresses (externalTrafficPolicy Local) is allocated a
// health-check node port unless it names one.
func prepareServiceForCreate(svc *core.Service) {
	if svc.Spec.Type == core.ServiceTypeLoadBalancer && svc.Spec.ExternalTrafficPolicy == core.ServiceExternalTrafficPolicyLocal && svc.Spec.HealthCheckNodePort == 0 {
		svc.Spec.HealthCheckNodePort = 30000 // the first port of the default node port range
	}
}

// prepareJobForCreate does what the Job REST strategy does before validating a new Job: the
// API server gives it a UID and, unless spec.manualSelector, generates the selector and the
// pod template's labels from it.
func prepareJobForCreate(job *batch.Job) {
	job.UID = types.UID("00000000-0000-0000-0000-00000000c0de")
	if job.Spec.ManualSelector != nil && *job.Spec.ManualSelector {
		return
	}
	if job.Spec.Template.Labels == nil {
		job.Spec.Template.Labels = map[string]string{}
	}
	for label, value := range map[string]string{
		batch.LegacyJobNameLabel:       job.Name,
		batch.JobNameLabel:             job.Name,
		batch.LegacyControllerUidLabel: string(job.UID),
		batch.ControllerUidLabel:       string(job.UID),
	} {
		if _, set := job.Spec.Template.Labels[label]; !set {
			job.Spec.Template.Labels[label] = value
		}
	}
	if job.Spec.Selector == nil {
		job.Spec.Selector = &metav1.LabelSelector{}
	}
	if job.Spec.Selector.MatchLabels == nil {
		job.Spec.Selector.MatchLabels = map[string]string{}
	}
	if _, set := job.Spec.Selector.MatchLabels[batch.ControllerUidLabel]; !set {
		job.Spec.Selector.MatchLabels[batch.ControllerUidLabel] = string(job.UID)
	}
}
