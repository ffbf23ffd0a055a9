"""Async registry client: authentication, pull and push over HTTP(S)."""
