"""One module a pipeline stage: read params and earlier outputs, write this stage's outputs."""
