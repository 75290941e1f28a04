"""asv benchmarks of fastsoftmax and its peers; see benchmarks/README.md."""
