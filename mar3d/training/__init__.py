"""Training on PyTorch Lightning: one module per stage, shared optimizer/schedule/checkpoint set-up."""
