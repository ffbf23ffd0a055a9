"""OCI and Docker image model: references, media types, manifests, platforms, layouts.

Usable on its own (no pipeline, no HTTP). One job per module:

* :mod:`esgz.oci.digest` — ``<algorithm>:<hex>`` digests, hashing helpers,
  :class:`~esgz.oci.digest.DigestingWriter` (verify digest and size while writing).
* :mod:`esgz.oci.reference` — parse registry references (Docker Hub normalisation,
  ``http://`` for plain HTTP) and ``local://`` OCI-layout references.
* :mod:`esgz.oci.mediatypes` — Docker/OCI media types, classification, the ``--oci``
  mapping and the media type of converted layers.
* :mod:`esgz.oci.manifest` — descriptors, manifests, indexes (lossless round trip,
  Go-compatible serialisation), image configs and the containerd-style config rewrite.
* :mod:`esgz.oci.platform` — platforms, containerd-compatible parsing and matchers,
  selecting the manifests of an index.
* :mod:`esgz.oci.blobstore` — a content-addressed blob store with verified, atomic ingest
  and LRU eviction.
* :mod:`esgz.oci.layout` — read and write OCI image-layout directories.
* :mod:`esgz.oci.gojson` — JSON text exactly as Go's ``encoding/json`` writes it (the
  serialisation of manifests, indexes and rewritten configs).
"""
