package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The OpenFaaS stack file, version 1.0, as faas-cli reads it (github.com/openfaas/faas-cli,
// package stack: Services, Provider, Function, FunctionResources, StackConfiguration). That
// module is not served by the Go module proxy here, so its schema is restated below and
// decoded strictly: an unknown or misspelled key is an error, as is a wrong type.
type stackFile struct {
	Version       string                   `yaml:"version"`
	Provider      stackProvider            `yaml:"provider"`
	Functions     map[string]stackFunction `yaml:"functions"`
	Configuration *stackConfiguration      `yaml:"configuration,omitempty"`
}

type stackProvider struct {
	Name       string `yaml:"name"`
	GatewayURL string `yaml:"gateway"`
	Network    string `yaml:"network,omitempty"`
}

type stackFunction struct {
	Language               string             `yaml:"lang"`
	Handler                string             `yaml:"handler"`
	Image                  string             `yaml:"image"`
	RegistryAuth           string             `yaml:"registry_auth,omitempty"`
	FProcess               string             `yaml:"fprocess,omitempty"`
	Environment            map[string]string  `yaml:"environment,omitempty"`
	Secrets                []string           `yaml:"secrets,omitempty"`
	SkipBuild              bool               `yaml:"skip_build,omitempty"`
	Constraints            *[]string          `yaml:"constraints,omitempty"`
	EnvironmentFile        []string           `yaml:"environment_file,omitempty"`
	Labels                 *map[string]string `yaml:"labels,omitempty"`
	Annotations            *map[string]string `yaml:"annotations,omitempty"`
	Limits                 *stackResources    `yaml:"limits,omitempty"`
	Requests               *stackResources    `yaml:"requests,omitempty"`
	ReadOnlyRootFilesystem bool               `yaml:"readonly_root_filesystem,omitempty"`
	BuildOptions           []string           `yaml:"build_options,omitempty"`
	BuildArgs              map[string]string  `yaml:"build_args,omitempty"`
	BuildSecrets           map[string]string  `yaml:"build_secrets,omitempty"`
	Platforms              string             `yaml:"platforms,omitempty"`
	Namespace              string             `yaml:"namespace,omitempty"`
}

type stackResources struct {
	Memory string `yaml:"memory,omitempty"`
	CPU    string `yaml:"cpu,omitempty"`
}

type stackConfiguration struct {
	Templates []struct {
		Name   string `yaml:"name"`
		Source string `yaml:"source,omitempty"`
		Path   string `yaml:"path,omitempty"`
	} `yaml:"templates,omitempty"`
	Copy []string `yaml:"copy,omitempty"`
}

type stackEnvironmentFile struct {
	Environment map[string]string `yaml:"environment"`
}

// faas-cli substitutes ${VAR} and ${VAR:-default} from its environment before parsing. A value it
// takes from its environment is not written in the file: marked as a Secret's would be.
var envsubstRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

func substitute(data []byte) []byte {
	return envsubstRe.ReplaceAllFunc(data, func(m []byte) []byte {
		sub := envsubstRe.FindSubmatch(m)
		if len(sub[3]) > 0 {
			return sub[3]
		}
		return []byte(secretSource + "faas-cli-env/" + string(sub[1]))
	})
}

func strictYAML(data []byte, into any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(into)
}

// StackFunction is what the cross checks need of a stack.yml function.
type StackFunction struct {
	Name        string
	Image       string
	Environment map[string]string // environment_file entries, then environment
	Annotations map[string]string
}

// CheckStack validates stack.yml and returns its functions.
func CheckStack(repo string, r *Report) map[string]*StackFunction {
	where := "stack.yml"
	path := filepath.Join(repo, "stack.yml")
	raw, err := os.ReadFile(path)
	if err != nil {
		r.Errorf(where, "%v", err)
		return nil
	}
	var sf stackFile
	if err := strictYAML(substitute(raw), &sf); err != nil {
		r.Errorf(where, "strict decoding (faas-cli stack schema): %v", err)
		return nil
	}
	if sf.Version != "1.0" {
		r.Errorf(where, "version must be 1.0, got %q", sf.Version)
	}
	if sf.Provider.Name != "openfaas" {
		r.Errorf(where, "provider.name must be openfaas, got %q", sf.Provider.Name)
	}
	if !strings.HasPrefix(sf.Provider.GatewayURL, "http://") && !strings.HasPrefix(sf.Provider.GatewayURL, "https://") {
		r.Errorf(where, "provider.gateway must be an http(s) URL, got %q", sf.Provider.GatewayURL)
	}
	if len(sf.Functions) == 0 {
		r.Errorf(where, "no functions")
	}
	out := map[string]*StackFunction{}
	for name, fn := range sf.Functions {
		fw := where + " function " + name
		for _, msg := range validation.IsDNS1123Label(name) {
			r.Errorf(fw, "name: %s", msg)
		}
		if fn.Language == "" {
			r.Errorf(fw, "lang is required")
		}
		if fn.Language == "dockerfile" {
			if fn.Handler == "" {
				r.Errorf(fw, "lang dockerfile needs a handler folder")
			} else if _, err := os.Stat(filepath.Join(repo, fn.Handler, "Dockerfile")); err != nil {
				r.Errorf(fw, "handler %q has no Dockerfile", fn.Handler)
			}
			if fn.BuildArgs["FUNCTION"] != name {
				r.Errorf(fw, "build_args.FUNCTION must be %q (the Dockerfile's build argument), got %q", name, fn.BuildArgs["FUNCTION"])
			}
		}
		if fn.Image == "" {
			r.Errorf(fw, "image is required")
		}
		for _, res := range []struct {
			what string
			v    *stackResources
		}{{"limits", fn.Limits}, {"requests", fn.Requests}} {
			if res.v == nil {
				r.Errorf(fw, "%s are required (memory and cpu)", res.what)
				continue
			}
			for k, q := range map[string]string{"memory": res.v.Memory, "cpu": res.v.CPU} {
				if _, err := resource.ParseQuantity(q); err != nil {
					r.Errorf(fw, "%s.%s %q: %v", res.what, k, q, err)
				}
			}
		}
		env := map[string]string{}
		for _, ef := range fn.EnvironmentFile {
			data, err := os.ReadFile(filepath.Join(repo, ef))
			if err != nil {
				r.Errorf(fw, "environment_file: %v", err)
				continue
			}
			var e stackEnvironmentFile
			if err := strictYAML(data, &e); err != nil {
				r.Errorf(fw, "environment_file %s: %v", ef, err)
				continue
			}
			for k, v := range e.Environment {
				env[k] = v
			}
		}
		for k, v := range fn.Environment {
			env[k] = v
		}
		annotations := map[string]string{}
		if fn.Annotations != nil {
			annotations = *fn.Annotations
		}
		if annotations["topic"] == "cron-function" {
			if _, err := cron.ParseStandard(annotations["schedule"]); err != nil {
				r.Errorf(fw, "cron-connector schedule %q: %v", annotations["schedule"], err)
			}
		}
		if fn.Labels != nil {
			for k, v := range *fn.Labels {
				if strings.HasPrefix(k, "com.openfaas.scale.") {
					if _, err := resource.ParseQuantity(v); err != nil {
						r.Errorf(fw, "label %s=%q must be a number", k, v)
					}
				}
			}
		}
		out[name] = &StackFunction{Name: name, Image: fn.Image, Environment: env, Annotations: annotations}
	}
	if len(r.Errors) == 0 {
		r.Pass(fmt.Sprintf("stack.yml: strict decode (%d functions)", len(out)))
	}
	return out
}
