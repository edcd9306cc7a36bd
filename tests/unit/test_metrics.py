"""Known-answer tests for the distribution and alignment metrics."""
import numpy as np
import pytest
import torch

from blinkgen.errors import UserInputError
from blinkgen.eval.metrics import (alignment, frechet_distance, frechet_distance_from_stats, gaussian_stats,
                                   kid, precision_recall, retrieval_accuracy)


def rng(seed=0):
    return np.random.default_rng(seed)


def random_cov(d, seed):
    m = rng(seed).normal(size=(d, d))
    return m @ m.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- Fréchet distance
def test_fd_of_a_set_with_itself_is_zero():
    x = rng().normal(size=(400, 12))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(torch.from_numpy(x).float(), x) == pytest.approx(0.0, abs=1e-4)


def test_fd_from_stats_matches_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    # commuting (diagonal) covariances: sum of (sqrt s1 - sqrt s2)^2
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-9)
    # S2 = c S1 (full, non-diagonal): tr(S1) (1 - sqrt c)^2
    s = random_cov(3, 1)
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s) * (1 - np.sqrt(2.5)) ** 2
    assert frechet_distance_from_stats(mu1, s, mu2, 2.5 * s) == pytest.approx(want, rel=1e-9)


def test_fd_from_large_samples_matches_the_analytic_value():
    d = 4
    mu1, mu2 = np.zeros(d), np.linspace(-1, 1, d)
    s1, s2 = random_cov(d, 2), random_cov(d, 3)
    analytic = frechet_distance_from_stats(mu1, s1, mu2, s2)
    a = rng(4).multivariate_normal(mu1, s1, size=20_000)
    b = rng(5).multivariate_normal(mu2, s2, size=20_000)
    assert frechet_distance(a, b) == pytest.approx(analytic, rel=0.03)
    mu, cov = gaussian_stats(a)
    assert np.allclose(mu, mu1, atol=0.05) and np.allclose(cov, s1, atol=0.05)


def test_fd_is_finite_for_singular_covariances():
    few = rng(6).normal(size=(5, 32))  # N < D: covariance of rank 4
    other = rng(7).normal(size=(6, 32))
    fd = frechet_distance(few, other)
    assert np.isfinite(fd) and fd > 0
    collinear = np.outer(rng(8).normal(size=300), np.ones(8))  # rank 1
    assert frechet_distance(collinear, collinear) == pytest.approx(0.0, abs=1e-4)
    one_d = rng(9).normal(size=(1000, 1))
    assert frechet_distance(one_d, one_d + 2) == pytest.approx(4.0, rel=1e-6)


# ----------------------------------------------------------------------------- KID
def test_kid_is_unbiased_on_one_distribution_and_positive_on_two():
    same = [kid(rng(s).normal(size=(300, 16)), rng(s + 100).normal(size=(300, 16)),
                subsets=20, subset_size=150, seed=s).mean for s in range(6)]
    far = kid(rng(0).normal(size=(300, 16)), rng(1).normal(size=(300, 16)) + 0.5,
              subsets=20, subset_size=150)
    assert far.mean > 10 * far.std > 0
    assert abs(np.mean(same)) < 0.05 * far.mean
    assert min(same) < 0 < max(same) or abs(np.mean(same)) < 0.01 * far.mean  # noise around 0


def test_kid_is_deterministic_per_seed():
    a, b = rng(1).normal(size=(50, 4)), rng(2).normal(size=(60, 4))
    assert kid(a, b, subsets=5, seed=3) == kid(a, b, subsets=5, seed=3)


# ----------------------------------------------------------------------------- precision / recall
def test_precision_recall_identical_and_disjoint():
    x = rng().normal(size=(300, 8))
    assert precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}
    pr = precision_recall(x, x + 100.0)
    assert pr["precision"] == 0.0 and pr["recall"] == 0.0


def test_precision_recall_half_coverage():
    """The textbook case: fakes cover half of the real manifold -> precision ~1, recall ~0.5."""
    real = rng(1).uniform(size=(2000, 2))
    fake = rng(2).uniform(size=(1000, 2)) * [0.5, 1.0]
    pr = precision_recall(real, fake, k=3)
    assert pr["precision"] > 0.97
    assert 0.45 < pr["recall"] < 0.58


# ----------------------------------------------------------------------------- alignment, retrieval
def test_alignment_on_constructed_embeddings():
    e = rng().normal(size=(50, 16))
    assert alignment(e, 3 * e) == pytest.approx(1.0)
    assert alignment(e, -e) == pytest.approx(-1.0)
    ortho = np.stack([e[:, 1], -e[:, 0]], 1)
    assert alignment(e[:, :2], ortho) == pytest.approx(0.0, abs=1e-12)


def test_retrieval_accuracy_on_constructed_embeddings():
    n = 200
    img = rng(1).normal(size=(n, 32))
    assert retrieval_accuracy(img, img + 0.01 * rng(2).normal(size=(n, 32))) == 1.0
    chance = retrieval_accuracy(img, rng(3).normal(size=(n, 32)), k=10)
    assert 0.0 < chance < 0.15  # about k/N = 0.05
    assert retrieval_accuracy(img, np.roll(img, 1, axis=0)) == 0.0  # every prompt belongs to a neighbour
    assert retrieval_accuracy(np.ones((10, 4)), np.ones((10, 4))) == 0.0  # collapsed: ties lose
    assert retrieval_accuracy(img, rng(4).normal(size=(n, 32)), k=n) == 1.0


@pytest.mark.parametrize("call", [
    lambda: frechet_distance(np.zeros((10, 3)), np.zeros((10, 4))),
    lambda: frechet_distance(np.zeros(10), np.zeros(10)),
    lambda: kid(np.full((10, 3), np.nan), np.zeros((10, 3))),
    lambda: precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3),
    lambda: alignment(np.zeros((4, 3)), np.zeros((5, 3))),
    lambda: retrieval_accuracy(np.zeros((4, 3)), np.zeros((4, 3)), k=5),
])
def test_bad_inputs_are_user_errors(call):
    with pytest.raises(UserInputError):
        call()
