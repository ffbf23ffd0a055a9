"""Pipeline stages: fetch, reuse-check, profile-map, convert, upload (orchestration only)."""
