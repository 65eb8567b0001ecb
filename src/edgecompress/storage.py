"""S3 access through boto3 (AWS, MinIO, or any S3-compatible endpoint from AWS_ENDPOINT_URL)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgecompress.errors import DatasetError


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise DatasetError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def download_s3(uri: str, directory: Path | None = None) -> Path:
    import boto3
    import botocore.exceptions

    bucket, key = split_s3_uri(uri)
    target = Path(directory or tempfile.mkdtemp(prefix="edgecompress-s3-")) / Path(key).name
    try:
        boto3.client("s3").download_file(bucket, key, str(target))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise DatasetError(f"cannot download {uri}: {exc}") from exc
    return target
