"""Distances between two sets of image features (numpy): FID, KID, and improved
precision and recall.

features: arrays [n, d] (float), one row per image, e.g. the 2048 Inception features
of utils/evaluation/inception.py.
"""
import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3  # k of the k-th nearest neighbour (Kynkäänniemi et al. 2019)
DISTANCE_ROWS = 1000  # rows of the distance matrix held at once: 1000 × n float64


def gaussian(features):
    """Mean [d] and covariance [d, d] (unbiased, n − 1) of the features."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
    """The symmetric square root of a symmetric positive semi-definite matrix
    (eigenvalues below zero, rounding errors, set to zero)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(cov1, cov2):
    """tr((cov1·cov2)^½), computed as tr((R·cov2·R)^½) with R = cov1^½: the same
    eigenvalues, but a symmetric matrix, so no complex parts from rounding."""
    root = _psd_sqrt(cov1)
    values = np.linalg.eigvalsh(root @ cov2 @ root)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mean1, cov1, mean2, cov2):
    """The Fréchet distance of N(mean1, cov1) and N(mean2, cov2):
    ‖mean1 − mean2‖² + tr(cov1) + tr(cov2) − 2·tr((cov1·cov2)^½)."""
    difference = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
    distance = (difference @ difference + np.trace(cov1) + np.trace(cov2)
                - 2 * trace_sqrt_product(cov1, cov2))
    return max(float(distance), 0.0)  # rounding can make an exact 0 slightly negative


def fid(features1, features2):
    """FID: the Fréchet distance of Gaussians fitted to the two feature sets."""
    return frechet_distance(*gaussian(features1), *gaussian(features2))


def polynomial_kernel(x, y):
    """KID's kernel k(x, y) = (x·y / d + 1)³, for all pairs: [len(x), len(y)]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """The unbiased estimate of MMD² between samples x [m, d] and y [n, d] under the
    polynomial kernel (the diagonal k(x_i, x_i) left out of the within-set means)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(features1, features2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """KID: unbiased MMD² averaged over `subsets` random subsets of
    min(subset_size, n1, n2) images of each set (drawn without replacement, seeded).
    Returns (mean, standard deviation over the subsets)."""
    features1 = np.asarray(features1, np.float64)
    features2 = np.asarray(features2, np.float64)
    size = min(subset_size, len(features1), len(features2))
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(features1[rng.choice(len(features1), size, replace=False)],
                            features2[rng.choice(len(features2), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _squared_distances(rows, points):
    """‖r − p‖² for every pair, [len(rows), len(points)], never below 0."""
    squared = ((rows ** 2).sum(1)[:, None] + (points ** 2).sum(1)[None, :]
               - 2 * rows @ points.T)
    return np.maximum(squared, 0)


def knn_radii(features, k=PR_NEIGHBOURS):
    """The distance of each point to its k-th nearest neighbour in the same set (the
    point itself not counted); computed DISTANCE_ROWS rows at a time."""
    features = np.asarray(features, np.float64)
    radii = np.empty(len(features))
    for start in range(0, len(features), DISTANCE_ROWS):
        squared = _squared_distances(features[start:start + DISTANCE_ROWS], features)
        # the k+1 smallest include the point itself at distance 0
        radii[start:start + DISTANCE_ROWS] = np.sqrt(np.partition(squared, k, axis=1)[:, k])
    return radii


def inside_fraction(queries, points, radii):
    """The fraction of queries within radii[j] of at least one points[j]: how much of
    the queries' set the union of the points' balls covers."""
    queries, points = np.asarray(queries, np.float64), np.asarray(points, np.float64)
    inside = 0
    for start in range(0, len(queries), DISTANCE_ROWS):
        distances = np.sqrt(_squared_distances(queries[start:start + DISTANCE_ROWS], points))
        inside += int((distances <= radii[None, :]).any(axis=1).sum())
    return inside / len(queries)


def precision_recall(real, fake, k=PR_NEIGHBOURS, real_radii=None):
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision = the share
    of fake points inside the real set's k-NN balls, recall = the share of real points
    inside the fake set's. real_radii: knn_radii(real, k), when already known."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    return inside_fraction(fake, real, real_radii), inside_fraction(real, fake,
                                                                      knn_radii(fake, k))
