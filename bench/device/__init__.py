"""The prepared GPU run of the fused scan: staged, time-limited, reporting as it goes (see bench/README.md)."""
