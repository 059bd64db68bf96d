"""Run infrastructure: the frozen model and run configuration (config), the files of a
run in modeldir (checkpoints), one training per model folder (folder_lock), checks
before anything is written (preflight), stopping on signals (signals), progress bars
(progress), write-then-rename (atomic), TensorFlow's set-up (tf_setup), cluster plans
(cluster), the stages' sizes and weights (stages, shapes), image grids and PNGs
(images), the priors fitted to the training latents (priors: a Gaussian mixture in
latent_prior, a second VAE in latent_vae), and the one error type (errors)."""
