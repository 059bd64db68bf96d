"""FID, KID, precision and recall for --action=evaluate: Inception features of the
final stage's reconstructions and prior samples, each set against the features of
the same test images (the reference, cached per data file and count).

evaluation.measure hands each batch's final-stage images to InceptionMetrics.add,
so no set of images is held in memory, only their features (2048 floats each).
"""
import hashlib
import json
import os
import zipfile

import numpy as np

from utils.data import hdf5_images
from utils.evaluation import fid, inception_weights
from utils.run import atomic
from utils.run.errors import UserError
from utils.run.progress import CountProgress

KINDS = ('reconstructions', 'samples')
MIN_IMAGES = fid.PR_NEIGHBOURS + 1  # a k-th neighbour needs k other images
REFERENCE_FORMAT = 1  # bump when what the reference cache holds changes
NETWORK = 'FID Inception-v3 (TensorFlow 2015-12-05 weights), pool3, 2048 features'


def cache_folder(conf):
    """--fid_cache_dir, else $MSVAE_CACHE_DIR or ~/.cache/msvae."""
    return conf.fid_cache_dir or inception_weights.cache_dir()


# ---------------------------------------------------------------- reference cache

def reference_key(path, count, weights_checksum):
    """What the cached reference depends on: the file (path, size, modification time),
    the number of images, and the network's weights."""
    info = os.stat(path)
    return {'path': os.path.abspath(path), 'size': info.st_size, 'mtime_ns': info.st_mtime_ns,
            'count': count, 'weights': weights_checksum, 'format': REFERENCE_FORMAT}


def reference_cache_path(folder, path, count):
    """One cache file per (data file, count): a changed file replaces its entry."""
    name = hashlib.sha1(f'{os.path.abspath(path)}|{count}'.encode()).hexdigest()[:16]
    return os.path.join(folder, 'reference', f'{name}.npz')


def read_reference(cache_path, key):
    """The cached reference arrays when the cache file exists and its key equals `key`;
    None otherwise (missing, stale, or unreadable)."""
    try:
        with np.load(cache_path) as stored:
            if json.loads(str(stored['key'])) != key:
                return None
            return {name: stored[name] for name in ('features', 'radii')}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_reference(cache_path, key, arrays):
    """Writes the reference arrays with their key, atomically; a cache that cannot be
    written gets a note (the features are computed again next time)."""
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with atomic.replacing(cache_path, suffix='.npz') as partial:
            np.savez(partial, key=np.asarray(json.dumps(key)), **arrays)
    except OSError as err:
        print(f'note: could not cache the reference features in {cache_path} '
              f'({err.strerror or err}); they are computed again next time')


def extract(extractor, batches, count, label):
    """Features [count, 2048] (float32) of the batches, with a progress bar."""
    progress = CountProgress(count, label)
    parts = []
    for batch in batches:
        parts.append(extractor(batch).astype(np.float32))
        progress.add(len(batch))
    progress.finish()
    return np.concatenate(parts)


def reference_features(extractor, conf, count, weights_checksum):
    """Features and k-NN radii of the first `count` test images: from the cache when
    its key matches the file and count, else computed and cached."""
    path = os.path.join(conf.data_dir, conf.test_data)
    key = reference_key(path, count, weights_checksum)
    cache_path = reference_cache_path(cache_folder(conf), path, count)
    cached = read_reference(cache_path, key)
    if cached is not None:
        print(f'reference features of {count} images of {path}: reused {cache_path}')
        return cached
    batches = hdf5_images.sequential_batches(path, conf.height, conf.width, conf.channel,
                                             conf.batch, limit=count)
    features = extract(extractor, batches, count, 'reference features')
    arrays = {'features': features, 'radii': fid.knn_radii(features)}
    write_reference(cache_path, key, arrays)
    return arrays


# ---------------------------------------------------------------- the metrics

def scores(features, reference):
    """FID, KID (mean and std over subsets), precision and recall of one feature set
    against the reference arrays."""
    kid_mean, kid_std = fid.kid(reference['features'], features)
    precision, recall = fid.precision_recall(reference['features'], features,
                                             real_radii=reference['radii'])
    return {'fid': fid.fid(reference['features'], features), 'kid': kid_mean,
            'kid_std': kid_std, 'precision': precision, 'recall': recall,
            'images': len(features)}


def check_counts(test_count, sample_count):
    """UserError when a set is too small for the k-NN radii of precision and recall."""
    if min(test_count, sample_count) < MIN_IMAGES:
        raise UserError(f'FID, KID, precision and recall need at least {MIN_IMAGES} images '
                        f'per set ({test_count} test images, --eval_samples={sample_count}): '
                        f'raise --eval_samples, use a larger test_data, or pass --noeval_fid')


class InceptionMetrics:
    """Collects final-stage features during evaluation; summary() compares them with
    the reference.

    Loading it loads the weights (UserError when missing) and the reference features
    (computed once per data file and count, then cached).
    """

    def __init__(self, conf, test_count, extractor=None):
        check_counts(test_count, conf.eval_samples)
        folder = cache_folder(conf)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UserError(f'the FID cache {folder} is a file, not a folder: remove it or '
                            f'point --fid_cache_dir (or $MSVAE_CACHE_DIR) at a folder')
        arrays = inception_weights.load_weights(
            conf.inception_weights or None,
            os.path.join(folder, inception_weights.CACHE_NAME))
        if extractor is None:
            from utils.evaluation import inception  # TensorFlow: loaded only when it is needed
            extractor = inception.InceptionFeatures(conf.channel, arrays)
        self.extractor = extractor
        self.reference_path = os.path.join(conf.data_dir, conf.test_data)
        self.reference = reference_features(extractor, conf, test_count,
                                            str(arrays[inception_weights.CHECKSUM_KEY]))
        # the reconstructions' features cost as much as the samples': --noeval_fid_reconstructions
        # halves the Inception time of an evaluation
        self.features = {kind: [] for kind in KINDS
                         if kind == 'samples' or getattr(conf, 'eval_fid_reconstructions', True)}

    def add(self, kind, images):
        """Adds the features of a batch of final-stage images [b, h, w, c] in [-1, 1];
        kind: 'reconstructions' or 'samples' (a kind left out is ignored)."""
        if kind in self.features:
            self.features[kind].append(self.extractor(images).astype(np.float32))

    def summary(self):
        """The JSON entry: the network, the reference, and the scores of each kind."""
        result = {'network': NETWORK, 'reference': self.reference_path,
                  'reference_images': len(self.reference['features'])}
        for kind, features in self.features.items():
            result[kind] = scores(np.concatenate(features), self.reference)
        return result

    def close(self):
        """Releases the feature network's session."""
        close = getattr(self.extractor, 'close', None)
        if close:
            close()


def report(entry):
    """Printed lines for the JSON entry of summary()."""
    lines = [f'final stage against {entry["reference_images"]} test images '
             f'({entry["network"]}):']
    for kind in (kind for kind in KINDS if kind in entry):
        s = entry[kind]
        lines.append(f'  {kind:15s} FID {s["fid"]:.2f}  KID {s["kid"]:.4f} ± '
                     f'{s["kid_std"]:.4f}  precision {s["precision"]:.3f}  '
                     f'recall {s["recall"]:.3f}  ({s["images"]} images)')
    return '\n'.join(lines)
