"""The interleaving engine: run a trace body beside a model's forward pass."""
