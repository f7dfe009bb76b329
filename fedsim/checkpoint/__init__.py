"""Checkpoints: run state as ``.npz`` arrays plus JSON structure, written atomically, read without pickle."""
from fedsim.checkpoint.store import (
    CheckpointError,
    CheckpointWriteError,
    Restored,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_newest,
    read_header,
    remove_temporary,
    save_checkpoint,
)
from fedsim.checkpoint.tree import StructureMismatchError, flatten, restore

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "Restored",
    "StructureMismatchError",
    "checkpoint_path",
    "flatten",
    "list_checkpoints",
    "load_checkpoint",
    "load_newest",
    "read_header",
    "remove_temporary",
    "restore",
    "save_checkpoint",
]
