"""The base of every named config block."""
from __future__ import annotations

from typing import ClassVar, Optional


class Block:
    """A block kind; its attrs subclasses are chosen in a config by their ``name``.

    Each kind has its own ``registry`` (name -> class), built explicitly next
    to the classes rather than by registration at import. ``default_name`` is
    used when a table leaves out ``name`` (None: the name is required).
    """

    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = None
