"""cnnbench.bench: latency and throughput, measured so that the figures can be trusted."""
