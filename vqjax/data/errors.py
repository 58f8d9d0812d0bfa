"""The error every data source raises when a dataset cannot be found or read as a dataset."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not prepared (as array_record files) in the data_dir, or an image folder does
    not hold images in the expected layout. The message says what was found and how to fix it."""
