// ocicheck answers questions about platforms, image references and image configs using
// containerd's platforms package, docker/distribution's reference package and Go's
// encoding/json, for the esgz oci tests.
//
// Input: one JSON request per line on stdin; output: one JSON answer per line.
//
//	{"op":"parse","spec":"linux/arm64"}            -> {"os":…,"architecture":…,"variant":…} | {"error":…}
//	{"op":"match","spec":…,"candidate":{…}}       -> {"match":bool}  (platforms.OnlyStrict)
//	{"op":"host"}                                  -> {"os":…,"architecture":…,"variant":…}
//	{"op":"reference","spec":…}                  -> {"domain","path","tag","digest"} | {"error":…}
//	{"op":"manifest"|"index","config":"…"}        -> {"json":"…"}  (ocispec struct re-marshalled)
//	{"op":"remarshal","config":"…"}               -> {"json":"…"}  (interface{} round trip)
//	{"op":"rewrite","config":"…","map":{old:new}}  -> {"config":"…","modified":bool}
//
// "rewrite" follows the steps of containerd's image converter for configs: decode the
// config as map[string]*json.RawMessage, replace rootfs.diff_ids by value, and when one
// changed re-marshal rootfs, drop the "Image" key of config and container_config and
// marshal the whole map again.
package main

import (
	"bufio"
	_ "crypto/sha256" // registers the digest algorithms with go-digest
	_ "crypto/sha512"
	"encoding/json"
	"os"

	"github.com/containerd/containerd/platforms"
	"github.com/docker/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go/v1"
)

type request struct {
	Op        string            `json:"op"`
	Spec      string            `json:"spec"`
	Candidate specs.Platform    `json:"candidate"`
	Config    string            `json:"config"`
	Map       map[string]string `json:"map"`
}

func platformAnswer(p specs.Platform) map[string]interface{} {
	return map[string]interface{}{"os": p.OS, "architecture": p.Architecture, "variant": p.Variant}
}

func rewrite(raw []byte, mapping map[string]string) (string, bool, error) {
	var doc map[string]*json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", false, err
	}
	var image specs.Image
	if err := json.Unmarshal(raw, &image); err != nil {
		return "", false, err
	}
	if image.RootFS.Type != "layers" {
		return string(raw), false, nil
	}
	changed := false
	for i, old := range image.RootFS.DiffIDs {
		if replacement, ok := mapping[old.String()]; ok && replacement != old.String() {
			image.RootFS.DiffIDs[i] = digest.Digest(replacement)
			changed = true
		}
	}
	if !changed {
		return string(raw), false, nil
	}
	rootfs, err := json.Marshal(image.RootFS)
	if err != nil {
		return "", false, err
	}
	rootfsRaw := json.RawMessage(rootfs)
	doc["rootfs"] = &rootfsRaw
	for _, key := range []string{"config", "container_config"} {
		value, ok := doc[key]
		if !ok || value == nil {
			continue
		}
		var nested map[string]*json.RawMessage
		if err := json.Unmarshal(*value, &nested); err != nil {
			return "", false, err
		}
		delete(nested, "Image")
		encoded, err := json.Marshal(nested)
		if err != nil {
			return "", false, err
		}
		encodedRaw := json.RawMessage(encoded)
		doc[key] = &encodedRaw
	}
	out, err := json.Marshal(doc)
	return string(out), true, err
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			out.Encode(map[string]string{"error": err.Error()})
			continue
		}
		switch req.Op {
		case "parse":
			p, err := platforms.Parse(req.Spec)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			out.Encode(platformAnswer(p))
		case "match":
			p, err := platforms.Parse(req.Spec)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			out.Encode(map[string]bool{"match": platforms.OnlyStrict(p).Match(req.Candidate)})
		case "reference":
			named, err := reference.ParseNormalizedNamed(req.Spec)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			named = reference.TagNameOnly(named)
			answer := map[string]string{"domain": reference.Domain(named), "path": reference.Path(named)}
			if tagged, ok := named.(reference.Tagged); ok {
				answer["tag"] = tagged.Tag()
			}
			if digested, ok := named.(reference.Digested); ok {
				answer["digest"] = digested.Digest().String()
			}
			out.Encode(answer)
		case "remarshal":
			var value interface{}
			if err := json.Unmarshal([]byte(req.Config), &value); err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			encoded, err := json.Marshal(value)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			out.Encode(map[string]string{"json": string(encoded)})
		case "manifest", "index":
			var doc interface{} = &specs.Manifest{}
			if req.Op == "index" {
				doc = &specs.Index{}
			}
			if err := json.Unmarshal([]byte(req.Config), doc); err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			encoded, err := json.Marshal(doc)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			out.Encode(map[string]string{"json": string(encoded)})
		case "host":
			out.Encode(platformAnswer(platforms.Normalize(platforms.DefaultSpec())))
		case "rewrite":
			config, modified, err := rewrite([]byte(req.Config), req.Map)
			if err != nil {
				out.Encode(map[string]string{"error": err.Error()})
				continue
			}
			out.Encode(map[string]interface{}{"config": config, "modified": modified})
		default:
			out.Encode(map[string]string{"error": "unknown op " + req.Op})
		}
	}
}
