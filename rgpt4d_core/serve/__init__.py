"""Serving: request schema (api), batched inference engine (no Ray), media policy (security)."""
