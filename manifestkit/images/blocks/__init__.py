"""Read a disk image's guest data, block by block: one reader per source format behind the
``VirtualDisk`` protocol (``disk.py``), chosen by content in ``open.open_disk``.

The header parsers in ``manifestkit.images`` say what an image *is*; these readers say what the
guest sees at each offset. They live beside the parsers (not in ``convert/``) because the converter
is only one of their users: the upload path and the sandbox's importer read disks too, and neither
should depend on the streamOptimized writer to do so.
"""
