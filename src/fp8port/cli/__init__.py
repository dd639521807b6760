"""The `fp8port` command line: one module per verb, wired together in `main`."""
