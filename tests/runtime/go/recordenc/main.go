// recordenc re-encodes record entries with the reference recorder package.
//
// It reads a stream of JSON objects (path, manifestDigest, layerIndex) on stdin and
// writes each one with github.com/containerd/stargz-snapshotter/recorder, i.e. exactly
// as ctr-remote writes its --record-out file. An object may carry the path's bytes as
// base64 in "rawPath" instead, so paths that are not valid UTF-8 reach the recorder as is.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/recorder"
)

type input struct {
	recorder.Entry
	RawPath []byte `json:"rawPath"`
}

func main() {
	dec := json.NewDecoder(os.Stdin)
	rec := recorder.New(os.Stdout)
	for {
		var in input
		if err := dec.Decode(&in); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if in.RawPath != nil {
			in.Path = string(in.RawPath)
		}
		if err := rec.Record(&in.Entry); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
