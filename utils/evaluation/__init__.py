"""Evaluation in numpy (and TensorFlow for the Inception network): PSNR / SSIM / MS-SSIM
and sharpness (metrics), FID / KID / precision-recall (fid, inception, inception_weights,
feature_metrics), --action=evaluate's measurement and report (measure), the
comparison of several models' results (comparison), and the training time of each
step from a run's events (training_time)."""
