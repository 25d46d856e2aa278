"""Putting pods in the mesh: traffic capture (iptables), the sidecar injection webhook and its certificates."""
