"""Small single-purpose helpers: schedule, checkpoints, meters, retrieval metrics, RNG, device."""
