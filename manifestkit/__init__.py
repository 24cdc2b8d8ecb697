"""manifestkit: prepare a disk image for EC2 ImportInstance/ImportVolume and run the import."""

__version__ = "0.2.0"
