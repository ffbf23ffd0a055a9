// Command builder converts a tar (plain, gzip or zstd) into an eStargz or
// zstd:chunked blob with the reference Go implementation and prints a JSON
// summary of the result.
//
//	builder --in TAR --out BLOB [--level N] [--chunk-size N] [--prioritized FILE]
//	        [--zstd] [--gomaxprocs N]
//
// The prioritized file lists one path per line. Paths that are not in the tar
// are reported in "missed" instead of failing the build.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
)

// zstdCompression joins the zstd:chunked compressor and decompressor into
// the estargz.Compression that Build expects.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

type summary struct {
	Digest    string            `json:"digest"`
	TOCDigest string            `json:"toc_digest"`
	DiffID    string            `json:"diff_id"`
	Size      int64             `json:"size"`
	Missed    []string          `json:"missed"`
	Metadata  map[string]string `json:"annotations"`
}

func readPrioritized(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.TrimSpace(line) != "" {
			names = append(names, line)
		}
	}
	return names, sc.Err()
}

func run() error {
	in := flag.String("in", "", "input tar (plain, gzip or zstd)")
	out := flag.String("out", "", "output blob")
	level := flag.Int("level", -100, "compression level (gzip: -2..9, zstd: 1..22)")
	chunkSize := flag.Int("chunk-size", 0, "chunk size in bytes (0: default 4 MiB)")
	prioritized := flag.String("prioritized", "", "file with prioritized paths, one per line")
	useZstd := flag.Bool("zstd", false, "build zstd:chunked instead of gzip eStargz")
	procs := flag.Int("gomaxprocs", 0, "GOMAXPROCS (the number of independently compressed parts)")
	flag.Parse()
	if *in == "" || *out == "" {
		return fmt.Errorf("--in and --out are required")
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}

	src, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer src.Close()
	info, err := src.Stat()
	if err != nil {
		return err
	}

	var opts []estargz.Option
	missed := []string{}
	if *prioritized != "" {
		names, err := readPrioritized(*prioritized)
		if err != nil {
			return fmt.Errorf("reading %s: %w", *prioritized, err)
		}
		opts = append(opts, estargz.WithPrioritizedFiles(names),
			estargz.WithAllowPrioritizeNotFound(&missed))
	}
	if *chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(*chunkSize))
	}
	metadata := map[string]string{}
	if *useZstd {
		zstdLevel := 3
		if *level != -100 {
			zstdLevel = *level
		}
		opts = append(opts, estargz.WithCompression(zstdCompression{
			&zstdchunked.Compressor{
				CompressionLevel: zstd.EncoderLevelFromZstd(zstdLevel),
				Metadata:         metadata,
			},
			&zstdchunked.Decompressor{},
		}))
	} else if *level != -100 {
		opts = append(opts, estargz.WithCompressionLevel(*level))
	}

	blob, err := estargz.Build(io.NewSectionReader(src, 0, info.Size()), opts...)
	if err != nil {
		return err
	}
	defer blob.Close()

	tmp, err := os.CreateTemp(filepath.Dir(*out), ".builder-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	hash := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(tmp, hash), 1<<20)
	size, err := io.Copy(w, blob)
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	if err := blob.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(summary{
		Digest:    "sha256:" + hex.EncodeToString(hash.Sum(nil)),
		TOCDigest: blob.TOCDigest().String(),
		DiffID:    blob.DiffID().String(),
		Size:      size,
		Missed:    missed,
		Metadata:  metadata,
	})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "builder: %v\n", err)
		os.Exit(1)
	}
}
