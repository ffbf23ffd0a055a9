// recordenc re-encodes record entries with the reference recorder package.
//
// It reads a stream of JSON objects (path, manifestDigest, layerIndex) on stdin and
// writes each one with github.com/containerd/stargz-snapshotter/recorder, i.e. exactly
// as ctr-remote writes its --record-out file.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/recorder"
)

func main() {
	dec := json.NewDecoder(os.Stdin)
	rec := recorder.New(os.Stdout)
	for {
		var e recorder.Entry
		if err := dec.Decode(&e); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := rec.Record(&e); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
