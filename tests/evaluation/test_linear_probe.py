"""The linear probe: its recipe on tensors, and that it leaves encoders unchanged."""

import numpy as np
import pytest
import torch

from evaluation.metrics.linear_probe import (
    DEFAULT_HOLDOUT,
    describe_recipe,
    fit_logistic,
    holdout_split,
    linear_probe,
    probe_train_rows,
    run_probe,
    standardizer,
    topk_accuracy,
)


def blobs(n_per_class, classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 4
    y = torch.arange(n_per_class * classes) % classes
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_near_perfect_on_linearly_separable_features():
    x, y = blobs(40, 8, 32, 1.0, 0)  # held-out sketches: the last 10 of each class
    x, y, xt, yt = x[:240], y[:240], x[240:], y[240:]
    out = linear_probe(x, y, xt, yt, max_iter=50)
    assert out["top1"] >= 0.98 and out["top5"] == 1.0
    assert out["num_train"] == 240 and out["num_test"] == 80 and out["num_classes"] == 8


def test_random_labels_stay_near_chance():
    x, _ = blobs(30, 8, 32, 1.0, 0)
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 8, (len(x),), generator=g)
    xt = torch.randn(200, 32, generator=g)
    yt = torch.randint(0, 8, (200,), generator=g)
    out = linear_probe(x, y, xt, yt, max_iter=30)
    assert out["top1"] < 0.3


def test_a_useless_dimension_does_not_break_standardisation():
    x, y = blobs(20, 4, 8, 0.5, 2)
    x = torch.cat([x, torch.full((len(x), 1), 7.0)], 1)  # constant column
    mean, std = standardizer(x)
    assert std[-1] == 1.0 and mean[-1] == 7.0
    out = linear_probe(x, y, x, y, max_iter=30)
    assert out["top1"] == 1.0


def test_holdout_is_the_last_fifth_of_each_class():
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2])
    fit, held = holdout_split(y, 0.2)
    assert held.tolist() == [8, 9]  # last of class 0 (5 items -> 1) and of class 1 (5 items -> 1)
    assert sorted(fit.tolist() + held.tolist()) == list(range(len(y)))  # class 2 (1 item) is all fit
    y10 = torch.arange(30) % 3  # 10 per class
    assert len(holdout_split(y10)[1]) == 3 * int(10 * DEFAULT_HOLDOUT)  # the default is the fraction used


def test_the_recipe_states_the_values_it_runs_with():
    text = describe_recipe(7, (0.5, 2.0), 33, holdout=0.25)
    assert "the first 7 gallery sketches" in text and "{0.5, 2}" in text and "33 iterations" in text
    assert "the last 25% of each class" in text
    assert "all gallery sketches" in describe_recipe(0)


def test_weight_decay_is_chosen_on_the_held_out_part_and_ties_go_to_the_larger():
    x, y = blobs(20, 4, 8, 0.2, 4)  # so easy that every weight decay is perfect on held out
    out = linear_probe(x, y, x, y, wd_grid=(1e-4, 1e-2), max_iter=20)
    assert out["val_top1"] == {1e-4: 1.0, 1e-2: 1.0} and out["weight_decay"] == 1e-2
    # heavy decay shrinks the weights
    w_small, _ = fit_logistic(x, y, 4, 1e-4, 50)
    w_big, _ = fit_logistic(x, y, 4, 10.0, 50)
    assert w_big.norm() < 0.2 * w_small.norm()


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 2, 0])
    assert topk_accuracy(logits, y, (1, 2, 5)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 5: 1.0}


def test_probe_trains_on_the_first_gallery_sketches_of_each_class():
    gl = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    assert probe_train_rows(gl, 2).tolist() == [0, 1, 2, 3, 4, 5]
    assert probe_train_rows(gl, 0).tolist() == list(range(9))
    x, y = blobs(12, 3, 6, 0.3, 6)
    out = run_probe(x[:9], y[:9].numpy(), x, y.numpy(), per_class=5, wd_grid=(1e-3,), max_iter=20)
    assert out["num_train"] == 15 and out["num_test"] == 9 and out["top1"] == 1.0


def test_deterministic():
    x, y = blobs(10, 5, 16, 2.0, 7)
    a = linear_probe(x, y, x, y, max_iter=25)
    b = linear_probe(x, y, x, y, max_iter=25)
    assert a == b
