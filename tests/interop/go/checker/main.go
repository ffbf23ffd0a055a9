// Command checker opens an eStargz or zstd:chunked blob with the reference Go
// reader, verifies its TOC digest and every chunk digest, reads every regular
// file, and optionally compares the result with the source tar.
//
//	checker --blob FILE --toc-digest sha256:... [--source-tar FILE] [--zstd] [--json]
//
// It prints a summary (JSON with --json) and exits 1 if any check failed.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

const (
	prefetchLandmark   = ".prefetch.landmark"
	noPrefetchLandmark = ".no.prefetch.landmark"
	tocTarName         = "stargz.index.json"
)

type report struct {
	Format           string   `json:"format"`
	TOCDigest        string   `json:"toc_digest"`
	Entries          int      `json:"entries"`
	DataEntries      int      `json:"data_entries"`
	FilesRead        int      `json:"files_read"`
	BytesRead        int64    `json:"bytes_read"`
	Landmark         string   `json:"landmark"`
	Prioritized      []string `json:"prioritized"`
	DiffID           string   `json:"diff_id"`
	UncompressedSize int64    `json:"uncompressed_size"`
	SourceEntries    int      `json:"source_entries"`
	Errors           []string `json:"errors"`
	OK               bool     `json:"ok"`
}

func (r *report) fail(format string, args ...interface{}) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

// clean normalises an entry name the way the reference reader does.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// rawTOC decodes the TOC JSON again through the public decompressor API so
// that the entries can be inspected in blob order with their raw fields.
func rawTOC(sr *io.SectionReader, useZstd bool) (*estargz.JTOC, digest.Digest, error) {
	if useZstd {
		if sr.Size() < zstdchunked.FooterSize {
			return nil, "", fmt.Errorf("blob too small for a zstd:chunked footer")
		}
		footer := make([]byte, zstdchunked.FooterSize)
		if _, err := sr.ReadAt(footer, sr.Size()-zstdchunked.FooterSize); err != nil {
			return nil, "", err
		}
		d := new(zstdchunked.Decompressor)
		_, tocOff, tocSize, err := d.ParseFooter(footer)
		if err != nil {
			return nil, "", err
		}
		return d.ParseTOC(io.NewSectionReader(sr, tocOff, tocSize))
	}
	tocOff, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return nil, "", err
	}
	d := new(estargz.GzipDecompressor)
	return d.ParseTOC(io.NewSectionReader(sr, tocOff, sr.Size()-tocOff-footerSize))
}

// fileContent reads one regular file through the reader, verifying each
// chunk with the TOC verifier, and returns the whole content digest.
func fileContent(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, size int64) (string, error) {
	fr, err := r.OpenFile(name)
	if err != nil {
		return "", err
	}
	whole := sha256.New()
	var off int64
	for off < size {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			return "", fmt.Errorf("no chunk covers offset %d", off)
		}
		if ce.ChunkOffset != off || ce.ChunkSize <= 0 {
			return "", fmt.Errorf("chunk at %d has offset %d size %d", off, ce.ChunkOffset, ce.ChunkSize)
		}
		verifier, err := v.Verifier(ce)
		if err != nil {
			return "", err
		}
		buf := make([]byte, ce.ChunkSize)
		if n, err := fr.ReadAt(buf, ce.ChunkOffset); int64(n) != ce.ChunkSize {
			return "", fmt.Errorf("reading chunk at %d: got %d bytes: %v", off, n, err)
		}
		if _, err := verifier.Write(buf); err != nil {
			return "", err
		}
		if !verifier.Verified() {
			return "", fmt.Errorf("chunk at file offset %d (blob offset %d) does not match its digest", off, ce.Offset)
		}
		whole.Write(buf)
		off += ce.ChunkSize
	}
	if off != size {
		return "", fmt.Errorf("chunks cover %d bytes, file has %d", off, size)
	}
	return "sha256:" + hex.EncodeToString(whole.Sum(nil)), nil
}

// checkStructure applies the stricter rules of the snapshotter's metadata
// reader: chunks follow their file, hardlink targets come earlier, and data
// offsets grow in TOC order.
func checkStructure(rep *report, toc *estargz.JTOC) {
	seen := map[string]bool{}
	var lastOffset int64
	prevType := ""
	for i, e := range toc.Entries {
		name := clean(e.Name)
		switch e.Type {
		case "chunk":
			if prevType != "reg" && prevType != "chunk" {
				rep.fail("entry %d: chunk of %q does not follow a regular file", i, e.Name)
			}
		case "hardlink":
			if !seen[clean(e.LinkName)] {
				rep.fail("entry %d: hardlink %q targets %q, which is not earlier in the TOC", i, e.Name, e.LinkName)
			}
		case "reg", "dir", "symlink", "char", "block", "fifo":
		default:
			rep.fail("entry %d: unknown type %q", i, e.Type)
		}
		if e.Type != "chunk" {
			seen[name] = true
		}
		if (e.Type == "reg" || e.Type == "chunk") && e.Offset != 0 {
			if e.Offset <= lastOffset {
				rep.fail("entry %d (%q): offset %d not after previous data offset %d", i, e.Name, e.Offset, lastOffset)
			}
			lastOffset = e.Offset
		}
		prevType = e.Type
	}
}

type sourceEntry struct {
	hdr    *tar.Header
	digest string
}

func openMaybeGzip(f *os.File) (io.Reader, error) {
	br := bufio.NewReader(f)
	magic, _ := br.Peek(3)
	if bytes.Equal(magic, []byte{0x1f, 0x8b, 0x08}) {
		return gzip.NewReader(br)
	}
	return br, nil
}

func readSource(p string) (map[string]*sourceEntry, []string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	rd, err := openMaybeGzip(f)
	if err != nil {
		return nil, nil, err
	}
	tr := tar.NewReader(rd)
	entries := map[string]*sourceEntry{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		name := clean(h.Name)
		if name == prefetchLandmark || name == noPrefetchLandmark || name == tocTarName {
			continue
		}
		hash := sha256.New()
		if _, err := io.Copy(hash, tr); err != nil {
			return nil, nil, err
		}
		if _, dup := entries[name]; !dup {
			order = append(order, name)
		}
		entries[name] = &sourceEntry{h, "sha256:" + hex.EncodeToString(hash.Sum(nil))}
	}
	return entries, order, nil
}

func typeName(flag byte, name string) string {
	switch flag {
	case tar.TypeReg, tar.TypeRegA:
		if flag == tar.TypeRegA && strings.HasSuffix(name, "/") {
			return "dir"
		}
		return "reg"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeDir:
		return "dir"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("unsupported(%q)", flag)
}

func xattrsOf(h *tar.Header) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			out[strings.TrimPrefix(k, "SCHILY.xattr.")] = []byte(v)
		}
	}
	return out
}

func sameXattrs(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// compareSource checks every source tar entry against the TOC entry of the
// same name and the file contents read through the reader.
func compareSource(rep *report, toc *estargz.JTOC, contents map[string]string, src map[string]*sourceEntry, order []string) {
	tocByName := map[string]*estargz.TOCEntry{}
	unames := map[int]string{}
	gnames := map[int]string{}
	for _, e := range toc.Entries {
		if e.Type == "chunk" {
			continue
		}
		if e.Uname != "" {
			unames[e.UID] = e.Uname
		}
		if e.Gname != "" {
			gnames[e.GID] = e.Gname
		}
		copied := *e
		copied.Uname = unames[e.UID]
		copied.Gname = gnames[e.GID]
		tocByName[clean(e.Name)] = &copied
	}
	rep.SourceEntries = len(order)
	for _, name := range order {
		s := src[name]
		h := s.hdr
		e, ok := tocByName[name]
		if !ok {
			rep.fail("%q: in the source tar but not in the TOC", name)
			continue
		}
		want := typeName(h.Typeflag, h.Name)
		if e.Type != want {
			rep.fail("%q: type %q, source has %q", name, e.Type, want)
			continue
		}
		if e.Mode != h.Mode {
			rep.fail("%q: mode %o, source has %o", name, e.Mode, h.Mode)
		}
		if e.UID != h.Uid || e.GID != h.Gid {
			rep.fail("%q: uid/gid %d/%d, source has %d/%d", name, e.UID, e.GID, h.Uid, h.Gid)
		}
		if h.Uname != "" && e.Uname != h.Uname {
			rep.fail("%q: user name %q, source has %q", name, e.Uname, h.Uname)
		}
		if h.Gname != "" && e.Gname != h.Gname {
			rep.fail("%q: group name %q, source has %q", name, e.Gname, h.Gname)
		}
		if !h.ModTime.IsZero() && h.ModTime.Unix() != 0 {
			wantTime := h.ModTime.UTC().Round(time.Second).Format(time.RFC3339)
			if e.ModTime3339 != wantTime {
				rep.fail("%q: modtime %q, source has %q", name, e.ModTime3339, wantTime)
			}
		}
		if !sameXattrs(e.Xattrs, xattrsOf(h)) {
			rep.fail("%q: xattrs %v, source has %v", name, e.Xattrs, xattrsOf(h))
		}
		switch want {
		case "reg":
			if e.Size != h.Size {
				rep.fail("%q: size %d, source has %d", name, e.Size, h.Size)
			}
			if got := contents[name]; got != s.digest {
				rep.fail("%q: content %s, source has %s", name, got, s.digest)
			}
		case "symlink":
			if e.LinkName != h.Linkname {
				rep.fail("%q: symlink target %q, source has %q", name, e.LinkName, h.Linkname)
			}
		case "hardlink":
			target := clean(h.Linkname)
			if clean(e.LinkName) != target {
				rep.fail("%q: hardlink target %q, source has %q", name, e.LinkName, h.Linkname)
			}
			if t, ok := src[target]; ok && t.hdr.Typeflag != tar.TypeLink && contents[name] != t.digest {
				rep.fail("%q: hardlink content %s, target %q has %s", name, contents[name], target, t.digest)
			}
		case "char", "block":
			if int64(e.DevMajor) != h.Devmajor || int64(e.DevMinor) != h.Devminor {
				rep.fail("%q: device %d:%d, source has %d:%d", name, e.DevMajor, e.DevMinor, h.Devmajor, h.Devminor)
			}
		}
	}
	for name := range tocByName {
		if name == prefetchLandmark || name == noPrefetchLandmark {
			continue
		}
		if _, ok := src[name]; !ok {
			rep.fail("%q: in the TOC but not in the source tar", name)
		}
	}
}

// checkStream decompresses the whole blob, records its DiffID and checks
// that the tar inside lists the TOC's entries in TOC order.
func checkStream(rep *report, sr *io.SectionReader, toc *estargz.JTOC, useZstd bool) {
	var dec io.Reader
	if useZstd {
		zr, err := zstd.NewReader(io.NewSectionReader(sr, 0, sr.Size()))
		if err != nil {
			rep.fail("zstd stream: %v", err)
			return
		}
		defer zr.Close()
		dec = zr
	} else {
		zr, err := gzip.NewReader(io.NewSectionReader(sr, 0, sr.Size()))
		if err != nil {
			rep.fail("gzip stream: %v", err)
			return
		}
		defer zr.Close()
		dec = zr
	}
	hash := sha256.New()
	counter := &countingWriter{}
	tr := tar.NewReader(io.TeeReader(dec, io.MultiWriter(hash, counter)))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rep.fail("tar stream inside the blob: %v", err)
			return
		}
		names = append(names, h.Name)
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(dec, io.MultiWriter(hash, counter))); err != nil {
		rep.fail("decompressing the blob: %v", err)
		return
	}
	rep.DiffID = "sha256:" + hex.EncodeToString(hash.Sum(nil))
	rep.UncompressedSize = counter.n
	var want []string
	for _, e := range toc.Entries {
		if e.Type != "chunk" {
			want = append(want, e.Name)
		}
	}
	if !useZstd {
		want = append(want, tocTarName)
	}
	// An entry shadowed by a later one of the same name may stay in the stream; the
	// TOC lists the last occurrence only.
	last := map[string]int{}
	for i, n := range names {
		last[clean(n)] = i
	}
	var visible []string
	for i, n := range names {
		if last[clean(n)] == i {
			visible = append(visible, n)
		}
	}
	if strings.Join(visible, "\x00") != strings.Join(want, "\x00") {
		rep.fail("tar entries in the blob %q differ from the TOC entries %q", names, want)
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func check(rep *report, blobPath, tocDigest, sourceTar string, useZstd bool) {
	f, err := os.Open(blobPath)
	if err != nil {
		rep.fail("%v", err)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		rep.fail("%v", err)
		return
	}
	sr := io.NewSectionReader(f, 0, info.Size())
	var opts []estargz.OpenOption
	if useZstd {
		opts = append(opts, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	}
	r, err := estargz.Open(sr, opts...)
	if err != nil {
		rep.fail("estargz.Open: %v", err)
		return
	}
	rep.TOCDigest = r.TOCDigest().String()
	want, err := digest.Parse(tocDigest)
	if err != nil {
		rep.fail("--toc-digest: %v", err)
		return
	}
	verifier, err := r.VerifyTOC(want)
	if err != nil {
		rep.fail("VerifyTOC: %v", err)
		return
	}
	toc, rawDigest, err := rawTOC(sr, useZstd)
	if err != nil {
		rep.fail("decoding the TOC: %v", err)
		return
	}
	if rawDigest != r.TOCDigest() {
		rep.fail("TOC digest %s from the footer path differs from Open's %s", rawDigest, r.TOCDigest())
	}
	checkStructure(rep, toc)

	contents := map[string]string{}
	rep.Prioritized = []string{}
	landmarkFound := false
	for _, e := range toc.Entries {
		if e.Type == "reg" || e.Type == "chunk" {
			rep.DataEntries++
		}
		if e.Type == "chunk" {
			continue
		}
		rep.Entries++
		name := clean(e.Name)
		if !landmarkFound && (name == prefetchLandmark || name == noPrefetchLandmark) {
			landmarkFound = true
			rep.Landmark = name
		} else if !landmarkFound {
			rep.Prioritized = append(rep.Prioritized, name)
		}
		if e.Type != "reg" && e.Type != "hardlink" {
			continue
		}
		ent, ok := r.Lookup(name)
		if !ok {
			rep.fail("%q: Lookup failed", name)
			continue
		}
		if ent.Type != "reg" {
			rep.fail("%q: resolves to a %q entry, not a regular file", name, ent.Type)
			continue
		}
		got, err := fileContent(r, verifier, ent.Name, ent.Size)
		if err != nil {
			rep.fail("%q: %v", name, err)
			continue
		}
		if ent.Digest != "" && got != ent.Digest {
			rep.fail("%q: content %s does not match the TOC digest %s", name, got, ent.Digest)
		}
		contents[name] = got
		if e.Type == "reg" {
			rep.FilesRead++
			rep.BytesRead += ent.Size
		}
		if name == prefetchLandmark || name == noPrefetchLandmark {
			if got != sha256Hex([]byte{0x0f}) {
				rep.fail("%q: landmark content is not the single byte 0x0f", name)
			}
		}
	}
	if !landmarkFound {
		rep.fail("no prefetch landmark in the TOC")
	}
	checkStream(rep, sr, toc, useZstd)
	if sourceTar != "" {
		src, order, err := readSource(sourceTar)
		if err != nil {
			rep.fail("reading the source tar: %v", err)
			return
		}
		compareSource(rep, toc, contents, src, order)
	}
}

func main() {
	blob := flag.String("blob", "", "eStargz or zstd:chunked blob")
	tocDigest := flag.String("toc-digest", "", "expected TOC digest (sha256:...)")
	sourceTar := flag.String("source-tar", "", "tar (plain or gzip) the blob was built from")
	useZstd := flag.Bool("zstd", false, "the blob is zstd:chunked")
	asJSON := flag.Bool("json", false, "print the summary as JSON")
	flag.Parse()
	rep := &report{Format: "gzip", Errors: []string{}}
	if *useZstd {
		rep.Format = "zstd"
	}
	if *blob == "" || *tocDigest == "" {
		rep.fail("--blob and --toc-digest are required")
	} else {
		check(rep, *blob, *tocDigest, *sourceTar, *useZstd)
	}
	sort.Strings(rep.Errors)
	rep.OK = len(rep.Errors) == 0
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		fmt.Printf("%s blob: %d entries, %d files (%d bytes) read, landmark %q, prioritized %q\n",
			rep.Format, rep.Entries, rep.FilesRead, rep.BytesRead, rep.Landmark, rep.Prioritized)
		for _, e := range rep.Errors {
			fmt.Println("error:", e)
		}
	}
	if !rep.OK {
		os.Exit(1)
	}
}
