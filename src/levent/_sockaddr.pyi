"""Type stubs for levent._sockaddr: socket address conversions, reachable from Cython only (cimport)."""
