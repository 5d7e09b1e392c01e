"""HTTP plumbing: routing, JSON bodies, the Matrix error model, CORS and request metrics."""
