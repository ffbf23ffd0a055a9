"""The eStargz and zstd:chunked layer format: writer, reader and verifier."""
