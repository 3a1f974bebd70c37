"""Analysis: tensors that explain a model (shapes, couplings, routing statistics, equivariance, digit separation)."""
