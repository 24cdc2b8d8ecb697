"""S3 without the workflow: presigning, plain HTTP on presigned URLs, bucket names and checks,
S3's errors, and the bounded concurrent verified part upload (with zero-part copies).

Nothing here knows about manifests on disk, upload state files or EC2; ``manifestkit.workflow``
composes these pieces.
"""
