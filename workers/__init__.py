"""Process entry points, configuration, and the composition of workers."""
