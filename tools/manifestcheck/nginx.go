package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// A small reader of the front doors' nginx configurations: the directives with the blocks they sit
// in (quotes, comments and nested blocks handled), and what the checks need from them.

type nginxDirective struct {
	Blocks []string // the enclosing blocks, outermost first, each as its words ("server", "location = /api/v1/health")
	Words  []string // the directive's name and arguments, quotes removed
}

func parseNginx(conf string) ([]nginxDirective, error) {
	var (
		out    []nginxDirective
		blocks []string
		words  []string
		word   strings.Builder
		inWord bool
	)
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(conf); i++ {
		switch c := conf[i]; c {
		case '#':
			endWord()
			for i < len(conf) && conf[i] != '\n' {
				i++
			}
		case '"', '\'':
			end := strings.IndexByte(conf[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quoted string")
			}
			word.WriteString(conf[i+1 : i+1+end])
			inWord = true
			i += end + 1
		case ';':
			endWord()
			out = append(out, nginxDirective{Blocks: append([]string(nil), blocks...), Words: words})
			words = nil
		case '{':
			endWord()
			blocks = append(blocks, strings.Join(words, " "))
			words = nil
		case '}':
			endWord()
			if len(blocks) == 0 || len(words) > 0 {
				return nil, fmt.Errorf("unbalanced } or a directive without ;")
			}
			blocks = blocks[:len(blocks)-1]
		case ' ', '\t', '\n', '\r':
			endWord()
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if len(blocks) > 0 || len(words) > 0 {
		return nil, fmt.Errorf("unterminated block or directive")
	}
	return out, nil
}

// frontDoor is what the checks read from a front door's configuration.
type frontDoor struct {
	Routes          map[string]string // "=/api/v1/health", "/api/v1/auth/" -> Host set ($function_host) or upstream proxied to
	Headers         map[string]string // proxy_set_header of the server block: lower-case name -> value
	LocationHeaders []string          // routes whose location sets headers of its own
	// Other directives with their arguments: of the http and server blocks, and of each route's location.
	ServerSettings map[string]string
	RouteSettings  map[string]map[string]string
}

// setting is a directive's value in a route's location: its own, else the server's (or http's), else nginx's default.
func (fd *frontDoor) setting(route, directive, nginxDefault string) string {
	if v, ok := fd.RouteSettings[route][directive]; ok {
		return v
	}
	if v, ok := fd.ServerSettings[directive]; ok {
		return v
	}
	return nginxDefault
}

func readFrontDoor(conf string) (*frontDoor, error) {
	directives, err := parseNginx(conf)
	if err != nil {
		return nil, err
	}
	fd := &frontDoor{Routes: map[string]string{}, Headers: map[string]string{}, ServerSettings: map[string]string{}, RouteSettings: map[string]map[string]string{}}
	ownHeaders := map[string]bool{}
	for _, d := range directives {
		if len(d.Blocks) == 0 || len(d.Words) == 0 {
			continue
		}
		block := d.Blocks[len(d.Blocks)-1]
		route, inLocation := strings.CutPrefix(block, "location ")
		route = strings.ReplaceAll(route, " ", "")
		if d.Words[0] != "proxy_set_header" && len(d.Words) > 1 {
			switch {
			case block == "http" || block == "server":
				fd.ServerSettings[d.Words[0]] = strings.Join(d.Words[1:], " ")
			case inLocation:
				if fd.RouteSettings[route] == nil {
					fd.RouteSettings[route] = map[string]string{}
				}
				fd.RouteSettings[route][d.Words[0]] = strings.Join(d.Words[1:], " ")
			}
		}
		switch {
		case d.Words[0] == "proxy_set_header" && len(d.Words) == 3 && inLocation:
			ownHeaders[route] = true
		case d.Words[0] == "proxy_set_header" && len(d.Words) == 3 && block == "server":
			fd.Headers[strings.ToLower(d.Words[1])] = d.Words[2]
		case !inLocation || !strings.HasPrefix(strings.TrimPrefix(route, "="), "/api/"):
			// Not a public route: nothing more to read.
		case d.Words[0] == "set" && len(d.Words) == 3 && d.Words[1] == "$function_host":
			fd.Routes[route] = d.Words[2]
		case d.Words[0] == "proxy_pass" && len(d.Words) == 2 && fd.Routes[route] == "":
			fd.Routes[route] = strings.TrimPrefix(d.Words[1], "http://")
		}
	}
	for route := range ownHeaders {
		fd.LocationHeaders = append(fd.LocationHeaders, route)
	}
	sort.Strings(fd.LocationHeaders)
	return fd, nil
}

// vouchingProblems: what keeps the front door from vouching for client addresses. It must set the
// client's address and the shared secret for every route, replacing any copy the client sent; a
// location with a proxy_set_header of its own inherits none of the server's.
func (fd *frontDoor) vouchingProblems(secretValue string) []string {
	var out []string
	for _, want := range [][2]string{
		{"X-Real-IP", "$remote_addr"},
		{"X-Forwarded-For", "$remote_addr"},
		{proxySecretHeader, secretValue},
	} {
		if fd.Headers[strings.ToLower(want[0])] != want[1] {
			out = append(out, fmt.Sprintf("the server block must set `proxy_set_header %s %s` (replacing the client's)", want[0], want[1]))
		}
	}
	for _, route := range fd.LocationHeaders {
		out = append(out, fmt.Sprintf("location %s sets a proxy_set_header of its own, so nginx drops the server's there (X-Real-IP, %s)", route, proxySecretHeader))
	}
	return out
}

// nginxSeconds reads an nginx time ("600s", "10m", "1h", "90"); false when it is not one.
func nginxSeconds(value string) (float64, bool) {
	units := []struct {
		suffix  string
		seconds float64
	}{{"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}}
	for _, u := range units {
		if number, ok := strings.CutSuffix(value, u.suffix); ok {
			n, err := strconv.ParseFloat(number, 64)
			return n * u.seconds, err == nil
		}
	}
	n, err := strconv.ParseFloat(value, 64)
	return n, err == nil
}
