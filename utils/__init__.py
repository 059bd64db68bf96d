"""Helpers of the pipeline, in three rooms by concern; none imports a top-level module.

    utils.data        data preparation: CelebA / image folders / IDX files => HDF5, and
                      the checks and file-order reads of those HDF5 files
    utils.evaluation  image metrics, Inception FID / KID / precision-recall, the
                      evaluate report and the comparison tables and figure
    utils.run         run infrastructure: the model configuration, checkpoints and
                      flags.json, preflight checks, signals, progress bars, atomic
                      writes, TensorFlow set-up, image grids, errors
"""
