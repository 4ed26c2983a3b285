"""What runs the pipeline's processes: settings they share (the JAX compilation cache)."""
