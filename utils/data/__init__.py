"""Data preparation: CelebA, image folders and MNIST IDX files => the HDF5 files the
reader takes (prepare_data, mnist, image_files, hdf5_writer), the data flags that
prepare_data shares with main.py (data_flags), and the checks and file-order reads of
those files (hdf5_images)."""
