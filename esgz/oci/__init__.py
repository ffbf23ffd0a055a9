"""OCI and Docker image model: references, media types, manifests, platforms, layouts."""
