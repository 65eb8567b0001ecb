"""Settings shared by components and pipelines, kept in one place."""

from __future__ import annotations

import os

from edgecompress import __version__

DEFAULT_REGISTRY = "ghcr.io/edgecompress"


def component_image() -> str:
    """The components image: EDGECOMPRESS_IMAGE, else <EDGECOMPRESS_REGISTRY>/components:<version>."""
    if os.environ.get("EDGECOMPRESS_IMAGE"):
        return os.environ["EDGECOMPRESS_IMAGE"]
    registry = os.environ.get("EDGECOMPRESS_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/components:{os.environ.get('EDGECOMPRESS_IMAGE_TAG', __version__)}"
