"""What a run records besides its checkpoints: a local metrics log (always), W&B (logger=wandb), and the
oscillation diagnostics of the QAT stage (latent weights vs the grid, oscillations and scales over time)."""
