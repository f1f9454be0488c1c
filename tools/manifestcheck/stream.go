package main

import (
	"fmt"
	"strconv"
	"strings"
)

// The live stream (functions/stream): Server-Sent Events that stay open up to STREAM_MAX_LIFETIME_S. Every hop in
// front of it passes them on unbuffered and uncompressed and waits longer than a stream lives, the platform's
// request timeout is longer too, and its workers keep threads free beside the streams they serve.
const (
	streamFunction     = "stream"
	streamRoute        = "=/api/v1/alerts/stream"
	streamLifetimeVar  = "STREAM_MAX_LIFETIME_S"
	streamPerWorkerVar = "STREAM_MAX_PER_WORKER"
)

// streamSetting is a number the stream function reads: the environment's value, else the code's default.
func (repo *Repo) streamSetting(name string, env map[string]string) (float64, bool) {
	if v, ok := env[name]; ok && v != "" {
		n, err := strconv.ParseFloat(v, 64)
		return n, err == nil
	}
	for _, v := range repo.EnvVars[streamFunction] {
		if v.Name == name && v.Default != nil {
			n, err := strconv.ParseFloat(*v.Default, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// checkStreamRoute: the front door sends the stream to the stream function, unbuffered, uncompressed, and reads it
// for longer than a stream lives.
func checkStreamRoute(repo *Repo, fd *frontDoor, where string, r *Report) {
	if !repo.Buildable(streamFunction) || fd == nil {
		return
	}
	lifetime, ok := repo.streamSetting(streamLifetimeVar, nil)
	if !ok {
		return // the code could not be asked; reported once by LoadRepo
	}
	target := fd.Routes[streamRoute]
	if target != streamFunction && !strings.HasPrefix(target, streamFunction+".") {
		r.Errorf(where, "routes no %s to the %s function (it goes to %q)", streamRoute, streamFunction, target)
		return
	}
	if v := fd.setting(streamRoute, "proxy_buffering", "on"); v != "off" {
		r.Errorf(where, "location %s: proxy_buffering is %s; Server-Sent Events must be passed on unbuffered (proxy_buffering off)", streamRoute, v)
	}
	if v := fd.setting(streamRoute, "gzip", "off"); v != "off" {
		r.Errorf(where, "location %s: gzip is %s; Server-Sent Events must not be compressed (gzip off)", streamRoute, v)
	}
	timeout := fd.setting(streamRoute, "proxy_read_timeout", "60s")
	if seconds, ok := nginxSeconds(timeout); !ok || seconds <= lifetime {
		r.Errorf(where, "location %s: proxy_read_timeout %s must be longer than a stream lives (%s %g s)", streamRoute, timeout, streamLifetimeVar, lifetime)
	}
	r.Pass("front doors: the live stream unbuffered, uncompressed, read long enough")
}

// checkStreamSizing: the platform waits longer than a stream lives (Knative's timeoutSeconds; 0 for OpenFaaS,
// whose gateway timeouts are the operator's), and each worker keeps threads beside its streams.
func checkStreamSizing(repo *Repo, env map[string]string, timeoutSeconds int64, where string, r *Report) {
	lifetime, okL := repo.streamSetting(streamLifetimeVar, env)
	perWorker, okW := repo.streamSetting(streamPerWorkerVar, env)
	if !okL || !okW {
		return
	}
	if timeoutSeconds > 0 && float64(timeoutSeconds) <= lifetime {
		r.Errorf(where, "timeoutSeconds %d must be longer than a stream lives (%s %g s)", timeoutSeconds, streamLifetimeVar, lifetime)
	}
	if threads, err := strconv.Atoi(env["THREADS"]); err == nil && float64(threads) <= perWorker {
		r.Errorf(where, "THREADS %d leaves no thread beside the streams a worker serves (%s %g): tickets and probes would wait", threads, streamPerWorkerVar, perWorker)
	}
	r.Pass(fmt.Sprintf("%s: sized for long-lived streams", streamFunction))
}
