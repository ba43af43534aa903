"""Metrics on a row's features: ``retrieval`` (mAP, precision@K, per-class AP, PR curve and
each query's nearest gallery items, in one streamed pass), ``knn`` (the weighted
nearest-neighbour vote on those neighbours) and ``linear_probe`` (logistic regression on
frozen features)."""
