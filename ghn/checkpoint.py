"""GHN checkpoints: our self-describing safetensors format and the reference ``torch.save`` format.

Ours: a safetensors file of the GHN's weights whose metadata holds ``format`` (``"ghn-archspace/1"``) and
``config``, the constructor arguments as JSON (image size included), so loading needs neither pickle nor Hydra.
Reference (facebookresearch/ppuda): a ``torch.save`` dict with ``state_dict`` and ``config`` (``hid`` for the hidden
size), read with ``torch.load(weights_only=True)``. Key names are the same in both.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile

import torch
import torch.nn as nn

FORMAT = "ghn-archspace/1"

#: Constructor arguments a checkpoint config may carry, with the reference's spellings mapped to ours.
_CONFIG_KEYS = {"max_shape", "num_classes", "hidden_dim", "hypernet", "decoder", "weight_norm", "ve", "layernorm",
                "image_size", "num_steps"}
_REFERENCE_ALIASES = {"hid": "hidden_dim"}
_REFERENCE_IGNORED = {"debug_level"}


class CheckpointError(Exception):
    """A GHN checkpoint cannot be read: the file is missing, truncated/corrupt, or not a GHN checkpoint."""

    def __init__(self, path: str, problem: str, detail: str = "") -> None:
        self.path, self.problem, self.detail = str(path), problem, detail
        super().__init__(f"{problem}: {path}" + (f" ({detail})" if detail else ""))


def _config_from(raw: dict, path: str) -> dict:
    config = {}
    for key, value in raw.items():
        key = _REFERENCE_ALIASES.get(key, key)
        if key in _REFERENCE_IGNORED:
            continue
        if key not in _CONFIG_KEYS:
            raise CheckpointError(path, "not a GHN checkpoint", f"unknown config key {key!r}")
        config[key] = value
    for required in ("max_shape", "num_classes"):
        if required not in config:
            raise CheckpointError(path, "not a GHN checkpoint", f"config lacks {required!r}")
    config["max_shape"] = tuple(int(s) for s in config["max_shape"])
    return config


def _safetensors_header(path: str, size: int) -> tuple[dict, int]:
    """The JSON header of a safetensors file and its length in bytes."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "header longer than the file")
        try:
            return json.loads(f.read(n)), n
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header") from e


def _file_kind(path: str) -> str | None:
    """``"safetensors"`` (an 8-byte header length, then a JSON header), ``"torch"`` (a zip archive or a legacy
    pickle) or ``None``, from the file's first bytes rather than its name."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    return None


def _read_safetensors(path: str, size: int) -> tuple[dict, dict]:
    from safetensors import safe_open

    header, n = _safetensors_header(path, size)
    meta = header.get("__metadata__") or {}
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(path, "truncated or corrupt checkpoint",
                              f"file has {size} bytes, tensors need {8 + n + end}")
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(path, "not a GHN checkpoint", "safetensors file without GHN metadata")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(path, "truncated or corrupt checkpoint", str(e)) from e
    return json.loads(meta["config"]), state


def _read_torch(path: str) -> tuple[dict, dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e):
            raise CheckpointError(path, "not a GHN checkpoint", "holds objects other than tensors and plain data") \
                from e
        raise CheckpointError(path, "truncated or corrupt checkpoint", msg) from e
    except Exception as e:  # unpickling errors of damaged files come in many types
        raise CheckpointError(path, "truncated or corrupt checkpoint", f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict) or \
            not isinstance(obj.get("config"), dict):
        raise CheckpointError(path, "not a GHN checkpoint", "expected a dict with 'state_dict' and 'config'")
    return obj["config"], obj["state_dict"]


def load_checkpoint(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a checkpoint in either format (detected from the file's first bytes, not its name).

    Args:
        path: the file.

    Returns:
        ``(config, state_dict)``, config with our constructor argument names.

    Raises:
        CheckpointError: the file is missing, empty/truncated/corrupt, or not a GHN checkpoint.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(path, "checkpoint file not found")
    if os.path.isdir(path):
        raise CheckpointError(path, "not a GHN checkpoint", "is a directory")
    size = os.path.getsize(path)
    if size < 9:  # shorter than any header
        raise CheckpointError(path, "truncated or corrupt checkpoint", f"only {size} bytes")
    kind = _file_kind(path)
    if kind == "safetensors":
        try:
            raw, state = _read_safetensors(path, size)
        except (json.JSONDecodeError, UnicodeDecodeError, struct.error) as e:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header") from e
    elif kind == "torch":
        raw, state = _read_torch(path)
    else:
        raise CheckpointError(path, "not a GHN checkpoint", "neither safetensors nor a torch.save file")
    return _config_from(raw, path), state


def read_metadata(path: str) -> dict[str, str]:
    """The string metadata of one of our safetensors checkpoints (``format``, ``config`` and what the writer added,
    e.g. ``train_width_range`` from ``ghn-train``); ``{}`` for a reference ``torch.save`` file.

    Raises:
        CheckpointError: the file is missing or its header is unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "checkpoint file not found")
    if _file_kind(path) != "safetensors":
        return {}
    header, _ = _safetensors_header(path, os.path.getsize(path))
    return dict(header.get("__metadata__") or {})


def load_state_into(ghn: nn.Module, state: dict[str, torch.Tensor], path: str = "") -> None:
    """Load a state dict strictly, turning a key/shape mismatch into a :class:`CheckpointError`."""
    try:
        ghn.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(path, "not a GHN checkpoint of this configuration", str(e).splitlines()[0]) from e


def save_checkpoint(ghn: nn.Module, path: str, extra: dict | None = None) -> None:
    """Write ``ghn`` to ``path`` as safetensors with its config in the metadata; atomic (temp file + rename).

    Args:
        ghn: a :class:`ghn.GHN`.
        path: destination.
        extra: more string metadata (e.g. epoch, notes).
    """

    meta = {"format": FORMAT, "config": json.dumps(ghn.config)}
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in ghn.state_dict().items()}
    atomic_save_safetensors(state, path, meta)


def atomic_save_safetensors(state: dict[str, torch.Tensor], path: str, metadata: dict | None = None) -> None:
    """Write tensors to a safetensors file atomically: a temp file in the same folder, then ``os.replace``.

    Args:
        state: name -> tensor (made contiguous and unshared here).
        path: destination.
        metadata: string metadata.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
