"""Workload identity: the mesh CA and the SPIFFE certificates it issues to proxies (issue 28)."""
