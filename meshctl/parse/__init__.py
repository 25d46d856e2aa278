"""Manifest parsing: untyped Kubernetes YAML documents -> model objects with field-level errors."""

from meshctl.parse.documents import parse_document
from meshctl.parse.route import parse_route_spec
from meshctl.parse.virtualnode import parse_virtual_node_spec

__all__ = ["parse_document", "parse_route_spec", "parse_virtual_node_spec"]
