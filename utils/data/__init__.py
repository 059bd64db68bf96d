"""Data preparation: CelebA, image folders and MNIST IDX files => the HDF5 files the
reader takes (prepare_data, mnist, image_files, hdf5_writer), and the checks and
file-order reads of those files (hdf5_images)."""
