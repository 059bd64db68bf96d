"""FID, KID and precision/recall (utils/evaluation/fid.py) against independent computations."""
import itertools

import numpy as np
import pytest
from scipy import linalg

from utils.evaluation import fid


def random_covariance(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).standard_normal((300, 20)) * 3 + 1
    assert fid.fid(features, features) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    # for diagonal covariances tr((S1 S2)^½) = Σ √(a_i b_i), so the distance is
    # ‖m1 − m2‖² + Σ (√a_i − √b_i)²
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 4, 6), rng.uniform(0.1, 4, 6)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected,
                                                                                  rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=30), rng.normal(size=30)
    c1, c2 = random_covariance(rng, 30), random_covariance(rng, 30)
    root = linalg.sqrtm(c1 @ c2).real
    expected = (m1 - m2) @ (m1 - m2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(root)
    assert fid.frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)


def test_fid_is_the_frechet_distance_of_the_fitted_gaussians():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 5)), rng.normal(0.5, 2, size=(150, 5))
    expected = fid.frechet_distance(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T))
    assert fid.fid(x, y) == pytest.approx(expected, rel=1e-12)
    assert fid.fid(x, y) > 1.0


def naive_mmd2(x, y):
    k = lambda a, b: (a @ b / len(a) + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_unbiased_estimator_matches_a_double_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.3, 1.5, size=(7, 3))
    assert fid.mmd2_unbiased(x, y) == pytest.approx(naive_mmd2(x, y), rel=1e-12)
    # subsets as large as the sets hold every image: each one gives the same value
    mean, std = fid.kid(x[:6], y[:6], subsets=5, subset_size=100)
    assert mean == pytest.approx(naive_mmd2(x, y[:6]), rel=1e-12) and std < 1e-12


def test_kid_is_near_zero_for_one_distribution_and_clearly_positive_for_two():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(800, 32)), rng.normal(size=(800, 32))
    shifted = rng.normal(0.3, 1.2, size=(800, 32))
    same, same_std = fid.kid(x, y, subsets=20, subset_size=400)
    different, _ = fid.kid(x, shifted, subsets=20, subset_size=400)
    assert abs(same) < 3 * same_std + 1e-3
    assert different > 0.1 and different > 50 * abs(same)


def test_knn_radii_against_sorted_distances(monkeypatch):
    monkeypatch.setattr(fid, 'DISTANCE_ROWS', 7)  # several row blocks
    points = np.random.default_rng(6).normal(size=(30, 4))
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    expected = np.sort(distances, axis=1)[:, 3]  # column 0 is the point itself
    np.testing.assert_allclose(fid.knn_radii(points, 3), expected, rtol=1e-9)


def naive_precision_recall(real, fake, k):
    def radii(points):
        return [sorted(np.linalg.norm(p - q) for q in points)[k] for p in points]

    def covered(queries, points, rad):
        return np.mean([any(np.linalg.norm(q - p) <= r for p, r in zip(points, rad))
                        for q in queries])
    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_against_a_plain_loop(monkeypatch):
    monkeypatch.setattr(fid, 'DISTANCE_ROWS', 5)
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(25, 3)), rng.normal(0.7, 0.6, size=(18, 3))
    ours = fid.precision_recall(real, fake, k=3)
    assert ours == pytest.approx(naive_precision_recall(real, fake, 3))
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1


def test_mode_collapse_gives_full_precision_and_no_recall():
    real = np.random.default_rng(8).normal(size=(50, 8))
    collapsed = np.repeat(real[:1], 40, axis=0)  # every fake is the same real image
    precision, recall = fid.precision_recall(real, collapsed)
    assert precision == 1.0
    assert recall == 1 / 50  # the fake balls have radius 0: only that one real image
