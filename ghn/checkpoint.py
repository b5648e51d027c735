"""GHN checkpoints: our self-describing safetensors format and the reference ``torch.save`` format.

Ours: a safetensors file of the GHN's weights whose metadata holds ``format`` (``"ghn-archspace/1"``) and
``config``, the constructor arguments as JSON (image size included), so loading needs neither pickle nor Hydra.
Reference (facebookresearch/ppuda): a ``torch.save`` dict with ``state_dict`` and ``config`` (``hid`` for the hidden
size), read with ``torch.load(weights_only=True)``. Key names are the same in both.

Every way a file can fail to be a usable checkpoint (missing, a directory, empty, unreadable, truncated, foreign, an
invalid config, weights that do not fit the config) raises one :class:`CheckpointError` whose message names the file
and the problem in one line.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.files import atomic_path

FORMAT = "ghn-archspace/1"

#: Constructor arguments a checkpoint config may carry, with the reference's spellings mapped to ours.
_CONFIG_KEYS = {"max_shape", "num_classes", "hidden_dim", "hypernet", "decoder", "weight_norm", "ve", "layernorm",
                "image_size", "num_steps", "concat_parts"}
_REFERENCE_ALIASES = {"hid": "hidden_dim"}
_REFERENCE_IGNORED = {"debug_level"}


class CheckpointError(UsageError):
    """A GHN checkpoint cannot be used: the file is missing, a directory, empty, unreadable, truncated or corrupt,
    not a GHN checkpoint, or holds an invalid config.

    Args:
        path: the file.
        problem: what is wrong, e.g. ``"checkpoint file not found"``.
        detail: more about it (shown in parentheses).

    The message is ``"PROBLEM: PATH (DETAIL)"``, one line.
    """

    def __init__(self, path: str, problem: str, detail: str = "") -> None:
        self.path, self.problem, self.detail = str(path), problem, detail
        super().__init__(f"{problem}: {path}" + (f" ({detail})" if detail else ""))


def _config_from(raw, path: str) -> dict:
    """Our constructor arguments from a checkpoint's config (reference spellings mapped); the values themselves
    are checked by the :class:`ghn.GHN` constructor."""
    if not isinstance(raw, dict):
        raise CheckpointError(path, "invalid GHN config", f"expected a dict, got {type(raw).__name__}")
    config = {}
    for key, value in raw.items():
        key = _REFERENCE_ALIASES.get(key, key)
        if key in _REFERENCE_IGNORED:
            continue
        if key not in _CONFIG_KEYS:
            raise CheckpointError(path, "invalid GHN config",
                                  f"unknown key {key!r}; known: {', '.join(sorted(_CONFIG_KEYS))}")
        config[key] = value
    for required in ("max_shape", "num_classes"):
        if required not in config:
            raise CheckpointError(path, "invalid GHN config", f"config lacks {required!r}")
    return config


def _sniff(path: str) -> tuple[str | None, int]:
    """Check that ``path`` is a readable, non-empty file and tell its format from its first bytes (not its name).

    Returns:
        ``(kind, size)``: kind ``"safetensors"`` (an 8-byte header length, then a JSON header), ``"torch"`` (a zip
        archive or a legacy pickle) or ``None``; size in bytes.

    Raises:
        CheckpointError: missing, a directory, unreadable or empty.
    """
    if os.path.isdir(path):
        steps = sorted(glob.glob(os.path.join(path, "checkpoints", "step_*", "ghn.safetensors")))
        if steps:  # the folder of a ghn-train run that has not finished: its checkpoints hold GHNs
            raise CheckpointError(path, "checkpoint is the folder of an unfinished training run",
                                  f"pass one of its checkpoints (the latest: {steps[-1]}), or finish the run with "
                                  f"ghn-train resume=true hydra.run.dir={path}")
        raise CheckpointError(path, "checkpoint is a directory, not a file",
                              "pass the .safetensors or .pt file inside it")
    if not os.path.exists(path):
        raise CheckpointError(path, "checkpoint file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError as e:
        raise CheckpointError(path, "cannot read checkpoint", e.strerror or type(e).__name__) from e
    if size == 0:
        raise CheckpointError(path, "empty checkpoint file", "0 bytes")
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", size
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch", size
    return None, size


def _safetensors_header(path: str, size: int) -> tuple[dict, int]:
    """The JSON header of a safetensors file and its length in bytes."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "header longer than the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header") from e
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header")
    return header, n


def _read_safetensors(path: str, size: int) -> tuple[dict, dict]:
    from safetensors import safe_open

    header, n = _safetensors_header(path, size)
    meta = header.get("__metadata__") or {}
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError) as e:
        raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header") from e
    if 8 + n + end > size:
        raise CheckpointError(path, "truncated or corrupt checkpoint",
                              f"file has {size} bytes, tensors need {8 + n + end}")
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(path, "not a GHN checkpoint", "safetensors file without GHN metadata")
    try:
        raw = json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(path, "invalid GHN config", "the config metadata is not JSON") from e
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(path, "truncated or corrupt checkpoint", str(e).splitlines()[0]) from e
    return raw, state


def _read_torch(path: str) -> tuple[dict, dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged or foreign pickles fail with many error types
        if "Weights only load failed" in str(e):
            raise CheckpointError(path, "not a GHN checkpoint", "holds objects other than tensors and plain data") \
                from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(path, "truncated or corrupt checkpoint", f"{type(e).__name__}: {first}"[:300]) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict) or "config" not in obj:
        raise CheckpointError(path, "not a GHN checkpoint", "expected a dict with 'state_dict' and 'config'")
    return obj["config"], obj["state_dict"]


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a checkpoint in either format (detected from the file's first bytes, not its name).

    Args:
        path: the file.

    Returns:
        ``(config, state_dict)``, config with our constructor argument names (values not yet checked: the
        :class:`ghn.GHN` constructor does that).

    Raises:
        CheckpointError: the file is missing, a directory, empty, unreadable, truncated or corrupt, not a GHN
            checkpoint, or its config has unknown or missing keys.
    """
    path = os.fspath(path)
    kind, size = _sniff(path)
    if kind == "safetensors":
        try:
            raw, state = _read_safetensors(path, size)
        except struct.error as e:
            raise CheckpointError(path, "truncated or corrupt checkpoint", "unreadable safetensors header") from e
    elif kind == "torch":
        raw, state = _read_torch(path)
    else:
        raise CheckpointError(path, "not a GHN checkpoint", "neither safetensors nor a torch.save file")
    return _config_from(raw, path), state


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of one of our safetensors checkpoints (``format``, ``config`` and what the writer added,
    e.g. ``train_width_range`` from ``ghn-train``); ``{}`` for a reference ``torch.save`` file.

    Args:
        path: the file.

    Returns:
        Metadata key -> string value.

    Raises:
        CheckpointError: the file is missing, a directory, empty, unreadable, or its header is unreadable.
    """
    path = os.fspath(path)
    kind, size = _sniff(path)
    if kind != "safetensors":
        return {}
    header, _ = _safetensors_header(path, size)
    return dict(header.get("__metadata__") or {})


def load_state_into(ghn: nn.Module, state: dict[str, torch.Tensor], path: str = "") -> None:
    """Load a state dict strictly; names and shapes are compared first, so a mismatch is one clear error.

    Args:
        ghn: the freshly built GHN.
        state: the checkpoint's tensors.
        path: the checkpoint file, for the message.

    Raises:
        CheckpointError: tensors missing, unexpected, not tensors, or of another shape than the config gives.
    """
    own = ghn.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    odd = [k for k in own if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)]
    if missing or unexpected or odd:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
        if odd:
            k = odd[0]
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            parts.append(f"{len(odd)} of another shape, e.g. {k!r}: {got} in the file, {tuple(own[k].shape)} "
                         "expected")
        raise CheckpointError(path, "weights do not match the checkpoint's configuration", "; ".join(parts))
    ghn.load_state_dict(state, strict=True)


def read_train_width_range(path: str | os.PathLike) -> tuple[int, int] | None:
    """The widths ``(low, high)`` a ``ghn-train`` checkpoint was trained on (``train_width_range`` in its metadata,
    :func:`read_metadata`), or ``None`` for a checkpoint that does not say (a released GHN, a reference ``.pt``,
    metadata written by hand or by another tool).

    Raises:
        CheckpointError: as :func:`read_metadata`.
    """
    raw = read_metadata(path).get("train_width_range")
    if not raw:
        return None
    try:
        lo, hi = (int(w) for w in json.loads(raw))
    except (ValueError, TypeError):  # not a pair of integers: no width to go by
        return None
    return (lo, hi) if 0 < lo <= hi else None


def save_checkpoint(ghn: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``ghn`` to ``path`` as safetensors with its config in the metadata, atomically.

    Args:
        ghn: a :class:`ghn.GHN`.
        path: destination.
        extra: more metadata (e.g. epoch, notes); non-string values are stored as JSON. The GHN's
            ``train_width_range`` (set by :meth:`ghn.GHN.load`) is written unless ``extra`` gives one.
    """
    meta = {"format": FORMAT, "config": json.dumps(ghn.config)}
    widths = getattr(ghn, "train_width_range", None)
    if widths:  # a loaded ghn-train GHN saved again keeps its training widths (``extra`` may override them)
        meta["train_width_range"] = json.dumps([int(w) for w in widths])
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    atomic_save_safetensors(ghn.state_dict(), path, meta)


def atomic_save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically (:func:`archspace.files.atomic_path`).

    Args:
        state: name -> tensor (copied to the CPU, contiguous and unshared, as safetensors requires).
        path: destination; its folder is created if missing.
        metadata: string metadata.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        _sort_metadata_keys(tmp)


@torch.no_grad()
def copy_state_into(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy a state dict read from a safetensors file into ``model``'s parameters and buffers in place.

    ``nn.Module.load_state_dict`` also hands each module the version that ``state_dict`` records in its metadata;
    safetensors keeps tensors only, and modules that check the version (torchvision's MNASNet) then refuse the load.
    Copying tensor by tensor needs no metadata.

    Args:
        model: the network; its ``state_dict()`` keys must equal ``state``'s.
        state: name -> tensor of the same shapes (cast to each destination's dtype and device).

    Returns:
        ``model``.

    Raises:
        ValueError: the keys differ (names the first missing and unexpected ones), or a tensor's shape differs
            (names the first such tensor).
    """
    own = model.state_dict()
    if own.keys() != state.keys():
        missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        raise ValueError(f"the saved weights do not fit {type(model).__name__}: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}; were they saved from another network?")
    wrong = next((k for k, t in own.items() if t.shape != state[k].shape), None)
    if wrong is not None:
        raise ValueError(f"the saved weights do not fit {type(model).__name__}: {wrong} has shape "
                         f"{tuple(state[wrong].shape)}, the network {tuple(own[wrong].shape)}; were they saved "
                         f"from another width or number of classes?")
    for key, t in own.items():
        t.copy_(state[key])
    return model


def _sort_metadata_keys(path: str | os.PathLike) -> None:
    """Rewrite a safetensors header in place with its ``__metadata__`` keys sorted, so that the same tensors and
    metadata always give the same bytes. safetensors writes the metadata in the random order of a Rust hash map
    (safetensors/safetensors issue 584); the header keeps its length (spaces pad it), and if the re-encoded JSON
    would not fit, the file is left as written."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) > n:
            return
        f.seek(8)
        f.write(encoded.ljust(n, b" "))
