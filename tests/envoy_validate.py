"""Validate served xDS resources with Envoy itself (the product's own check, meshctl/xds/validate.py)."""

from meshctl.xds.validate import envoy_validate, inline_group

__all__ = ["envoy_validate", "inline_group"]
