"""A simulated GPU inference server: the stand-in for vLLM in tests, demos and benchmarks."""
