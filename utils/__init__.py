"""Data preparation, image grids and PNG writing."""
