package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// EnvVar is one environment variable a program reads, as `esm config vars --json` prints it.
type EnvVar struct {
	Name     string  `json:"name"`
	Group    string  `json:"group"`
	Required bool    `json:"required"`
	Secret   bool    `json:"secret"`
	Default  *string `json:"default"`
}

// Programs other than the functions whose environment is checked against what their code reads:
// the Deployment's name -> the module it runs.
var bridgeSources = map[string]string{
	"kafka-source-bridge": "easysmart/bridges/kafka_source.py",
	"outbox-relay":        "easysmart/bridges/outbox_relay.py",
	"ping-source-bridge":  "easysmart/bridges/ping_source.py",
}

// The code's answer depends only on the package and the entry points; the negative tests run the
// checker on many copies of the same code, so answers are kept by the hash of what was read.
var (
	envVarsMu    sync.Mutex
	envVarsCache = map[[32]byte]map[string][]EnvVar{}
)

// LoadEnvVars asks the code (esm config vars, run with the repository's package first on the path)
// which variables each function and each bridge reads.
func LoadEnvVars(root, python string, functions []string) (map[string][]EnvVar, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if strings.ContainsRune(python, filepath.Separator) {
		if python, err = filepath.Abs(python); err != nil {
			return nil, err
		}
	}
	key, err := codeHash(root)
	if err != nil {
		return nil, err
	}
	envVarsMu.Lock()
	defer envVarsMu.Unlock()
	if cached, ok := envVarsCache[key]; ok {
		return cached, nil
	}
	out := map[string][]EnvVar{}
	for _, fn := range functions {
		if out[fn], err = configVars(root, python, "--function", fn); err != nil {
			return nil, err
		}
	}
	for name, source := range bridgeSources {
		if out[name], err = configVars(root, python, "--source", source); err != nil {
			return nil, err
		}
	}
	envVarsCache[key] = out
	return out, nil
}

func configVars(root, python, flag, value string) ([]EnvVar, error) {
	cmd := exec.Command(python, "-m", "easysmart.cli", "config", "vars", flag, value, "--root", root, "--json")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PYTHONPATH="+root+string(os.PathListSeparator)+os.Getenv("PYTHONPATH"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -m easysmart.cli config vars %s %s: %v: %s", python, flag, value, err, strings.TrimSpace(stderr.String()))
	}
	var vars []EnvVar
	if err := json.Unmarshal(stdout, &vars); err != nil {
		return nil, fmt.Errorf("esm config vars %s %s: %v", flag, value, err)
	}
	return vars, nil
}

// codeHash covers every Python file of the package and of the functions.
func codeHash(root string) ([32]byte, error) {
	var files []string
	for _, dir := range []string{"easysmart", "functions"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".py") {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			return [32]byte{}, err
		}
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return [32]byte{}, err
		}
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return key, nil
}

// Variables the code may run without (it then trusts less) that a deployment must still set.
var deploymentRequired = map[string]bool{proxySecretVar: true}

// Reads tells whether the program's code reads the variable.
func (repo *Repo) Reads(program, name string) bool {
	for _, v := range repo.EnvVars[program] {
		if v.Name == name {
			return true
		}
	}
	return false
}

// checkEnvAgainstCode: a program's environment holds every variable its code reads without a
// default, and nothing its code does not read (a secret mounted where it is never used, say); a
// secret is taken from a secret store, never written in the manifest.
func checkEnvAgainstCode(repo *Repo, program string, env map[string]string, where string, r *Report) {
	if repo.EnvVars == nil {
		return // the code could not be asked; reported once by LoadRepo
	}
	vars, ok := repo.EnvVars[program]
	if !ok {
		r.Notef(where, "no code for %s yet: its environment is not compared with what it reads", program)
		return
	}
	reads := map[string]bool{}
	var missing, literal []string
	for _, v := range vars {
		reads[v.Name] = true
		val, set := env[v.Name]
		if (v.Required || deploymentRequired[v.Name]) && (!set || val == "") {
			missing = append(missing, v.Name)
		}
		if v.Secret && set && val != "" && !strings.HasPrefix(val, secretSource) {
			literal = append(literal, v.Name)
		}
	}
	var unread []string
	for name := range env {
		if !reads[name] {
			unread = append(unread, name)
		}
	}
	sort.Strings(unread)
	if len(missing) > 0 {
		r.Errorf(where, "environment variables read without a default are not set: %s", strings.Join(missing, ", "))
	}
	if len(unread) > 0 {
		r.Errorf(where, "carries %s, which %s does not read (esm config vars)", strings.Join(unread, ", "), program)
	}
	if len(literal) > 0 {
		r.Errorf(where, "secrets written in the manifest: %s (take them from a Secret, or in stack.yml from faas-cli's environment)", strings.Join(literal, ", "))
	}
	if len(missing) == 0 && len(unread) == 0 && len(literal) == 0 {
		r.Pass("env: exactly the variables the code reads")
	}
}
