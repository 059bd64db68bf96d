"""The layout the code keeps: no import cycle, utils/ below the top-level modules, a
network.py that only builds the graph, an ops.py without mutable module state."""
import ast
import builtins
import dataclasses
import graphlib
import os
import types

import pytest
import tensorflow as tf

import main
import network
import ops
from conftest import ROOT

TOP_LEVEL = ('main', 'network', 'ops', 'runner', 'data_reader', 'towers', 'distributed',
             'compare')


def project_modules():
    """module name => path of every .py of the project outside tests/ and benchmarks/."""
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        top = folder == ROOT
        dirs[:] = [d for d in dirs if not d.startswith('.') and d != '__pycache__' and not (
            top and d in ('tests', 'benchmarks', 'experiments', 'docs', 'data', 'configs'))]
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                found[module.removesuffix('.__init__')] = path
    return found


def imports_of(path, modules):
    """The project modules that the file at `path` imports (anywhere in it)."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return {name for name in names if name in modules}


def import_graph():
    modules = project_modules()
    return {module: imports_of(path, modules) - {module} for module, path in modules.items()}


def test_the_graph_finds_known_imports():
    graph = import_graph()
    assert {'network', 'data_reader', 'utils.run.checkpoints'} <= graph['runner']
    assert 'utils.data.hdf5_images' in graph['data_reader']
    assert 'utils.run.errors' in graph['utils.run.config']


def test_no_import_cycle():
    graphlib.TopologicalSorter(import_graph()).prepare()  # raises CycleError on a cycle


def test_no_module_under_utils_imports_a_top_level_module():
    wrong = {module: sorted(imported & set(TOP_LEVEL))
             for module, imported in import_graph().items() if module.startswith('utils')}
    assert {module: found for module, found in wrong.items() if found} == {}


@pytest.mark.parametrize('room', ['utils.data', 'utils.evaluation', 'utils.run'])
def test_each_room_of_utils_says_what_it_holds(room):
    path = project_modules()[room]
    with open(path) as handle:
        docstring = ast.get_docstring(ast.parse(handle.read()))
    listed = {name[:-3] for name in os.listdir(os.path.dirname(path))
              if name.endswith('.py') and name != '__init__.py'}
    assert docstring and all(name in docstring for name in listed), (room, listed)


def test_network_imports_no_io_and_calls_no_printing_or_session():
    with open(os.path.join(ROOT, 'network.py')) as handle:
        tree = ast.parse(handle.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert not imported & {'os', 'io', 'sys', 'json', 'h5py', 'shutil', 'pathlib', 'runner',
                           'data_reader', 'utils.run.checkpoints', 'utils.run.images'}
    called = {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
              for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, (ast.Name, ast.Attribute))}
    assert not called & {'print', 'open', 'Session', 'FileWriter', 'Saver', 'save', 'restore',
                         'run', 'write'}


def test_network_builds_the_graph_without_a_session_files_or_printing(tiny_conf, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError('network.build must not do this')
    monkeypatch.setattr(builtins, 'print', forbidden)
    monkeypatch.setattr(builtins, 'open', forbidden)
    monkeypatch.setattr(tf.compat.v1, 'Session', forbidden)
    conf = tiny_conf(num_stages=3)
    with tf.Graph().as_default() as graph:
        net = network.build(conf.model, ops.BuildOptions(),
                            network.TrainingSetup(learning_rate=1e-3, beta1=0.9, noise_seed=1))
    assert len(net.stage_outputs) == len(net.sample_outputs) == 3
    assert net.train_op.graph is graph and net.sync_optimizer is None
    assert {'kl', 'stage1_loss', 'stage3_loss', 'total'} <= set(net.metrics)


IMMUTABLE = (type(None), bool, int, float, str, bytes, tuple, frozenset, types.ModuleType,
             types.FunctionType, type)


def frozen(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__dataclass_params__.frozen
    if isinstance(value, tuple):
        return all(frozen(item) for item in value)
    return isinstance(value, IMMUTABLE)


@pytest.mark.parametrize('module', [ops, network])
def test_no_mutable_state_at_module_level(module):
    mutable = {name: type(value).__name__ for name, value in vars(module).items()
               if not name.startswith('__') and not frozen(value)}
    assert mutable == {}
    with open(module.__file__) as handle:
        assert not any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(handle.read())))


def test_the_check_sees_mutable_state():
    assert not frozen({'data_format': 'NHWC'}) and not frozen([1])
    assert frozen(ops.BuildOptions()) and frozen((1, 'a'))


def test_build_options_are_frozen_and_reach_the_ops():
    options = ops.BuildOptions(data_format='NCHW')
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.data_format = 'NHWC'
    assert ops.channels_axis(options) == 1 and ops.channels_axis(ops.BuildOptions()) == 3


def test_the_run_configuration_is_read_only_and_replace_copies(tiny_conf):
    conf = tiny_conf()
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.max_step = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.model.latent_len = 3
    changed = conf.replace(max_step=3)
    assert (changed.max_step, conf.max_step) == (3, 10)


def test_every_model_field_is_a_flag_and_a_field_of_flags_json(tiny_conf):
    from utils.run import config
    names = set(config.field_names())
    assert names <= set(main.FLAG_NAMES)
    assert set(config.variable_fields()) < names
    assert tiny_conf().model.as_dict().keys() == names


def test_tensorflow_is_set_up_by_the_call_not_by_imports():
    benchmarks = os.path.join(ROOT, 'benchmarks')
    scripts = [os.path.join(benchmarks, name) for name in os.listdir(benchmarks)
               if name.endswith('.py')]
    for path in list(project_modules().values()) + scripts:
        with open(path) as handle:
            source = handle.read()
        if not path.endswith(os.path.join('utils', 'run', 'tf_setup.py')):
            assert 'disable_eager_execution' not in source, path
