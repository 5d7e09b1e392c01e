"""/sync: tokens (pure) and the handler that computes responses."""
