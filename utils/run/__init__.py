"""Run infrastructure: the frozen model configuration (config), the files of a run in
modeldir (checkpoints), checks before anything is written (preflight), signals,
progress bars, atomic writes, TensorFlow's set-up, cluster plans, stage sizes, image
grids and PNGs, and the one error type (errors)."""
