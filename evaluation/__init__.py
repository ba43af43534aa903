"""The middle floor's evaluation pipeline: one stage a module, data flowing one way.

    run           command line, plan of rows, the loop (the only caller of the stages)
    encoders      checkpoint or seeded random init -> Encoder (a network with named layers)
    features      (Encoder, split, layer) -> features, extracted once and cached on disk
    descriptors   parts, weights and fusion -> one row's query and gallery features
    metrics/      retrieval (mAP, P@K, per-class AP, nearest neighbours), knn, linear_probe
    report        table, results JSON and Markdown, result names, the index of a run's results
    pictures      query grid, per-class AP chart, precision-recall curves

Support modules, used by several stages and calling none: ``feature_matrix`` (feature
matrices read and written in row blocks, in memory or in ``.npy`` files) and
``output_files`` (files written whole or not at all, one line on a full disk). ``extract``
is the second command over the same stages: features of your own sketch files, and their
ranking against a gallery (``python extract_features.py``). ``recalibrate`` is the third, over
``encoders`` only: a checkpoint whose batch-norm statistics are recomputed on clean sketches
(``python -m evaluation.recalibrate``).

Nothing is imported here, so that ``python -m evaluation.extract`` and light imports stay
cheap; import the modules themselves.
"""
