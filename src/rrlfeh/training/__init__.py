"""Training: the paper's GRU, its Hyperband search, repeated stratified K-fold and the final
ensemble, every trial and fold tracked in MLflow."""
