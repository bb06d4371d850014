"""cnnbench.infer: the runtime. Model contract, sessions, the folder pipeline, CSV."""
