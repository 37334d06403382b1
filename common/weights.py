"""Initial weights from a local file (``model.weights=PATH``): fine-tuning from a checkpoint
the user has, as the NSO paper fine-tunes from ImageNet weights, without a download.

Accepted files, all read with ``weights_only=True`` (no code is unpickled) after their
CRC-32 records are verified:

* a state dict as ``torch.save(model.state_dict(), PATH)`` writes it, torchvision's
  checkpoints (``resnet18-f37072fd.pth``) among them;
* a training checkpoint holding one under ``"model"`` (this project's ``best.pt`` and
  ``checkpoint.pt``), ``"state_dict"`` or ``"model_state_dict"``; DDP's ``module.`` prefix
  is dropped;
* either in the zip format of PyTorch 1.6 and later (its CRC records verified) or in the
  older format many published checkpoints still use (read by ``torch.load`` alone), with
  or without BatchNorm's ``num_batches_tracked`` counters (older files lack them).

A file named as torch.hub names its downloads (``<name>-<hex>.<ext>``) must have a SHA-256
starting with that hex, as ``torch.hub``'s ``check_hash`` requires. The checkpoint must
fit the model the config builds, key for key and shape for shape, with one exception the
user asks for: ``replace_head=True`` keeps the model's own, freshly initialised classifier
(its last ``nn.Linear``) instead of the checkpoint's, whether or not the two have the same
number of classes (a checkpoint's classes are not the task's: CIFAR-10's ten are not
another set's ten).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import ModelError, UserError
from common.io import sha256_file

#: keys under which training checkpoints keep the model's state dict
STATE_KEYS = ("model", "state_dict", "model_state_dict")
#: torch.hub's file names: ``<name>-<first hex digits of the SHA-256>.<extension>``
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
BN_COUNTER = "num_batches_tracked"
MAX_BYTES = 16 * 2**30  # a larger "checkpoint" is a mistake (or /dev/zero)


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    state = loaded
    if isinstance(loaded, Mapping):
        nested = [k for k in STATE_KEYS if isinstance(loaded.get(k), Mapping)]
        if nested:
            state = loaded[nested[0]]
    if not isinstance(state, Mapping) or not state:
        raise ModelError(
            f"{path} holds no state dict (expected torch.save(model.state_dict()) or a "
            f"checkpoint with one under {', '.join(map(repr, STATE_KEYS))})."
        )
    tensors = {str(k).removeprefix("module."): v for k, v in state.items()}
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ModelError(f"{path} is not a state dict: some of its values are not tensors.")
    return tensors


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in ``path`` and the file's SHA-256, verified as the module says."""
    from common.train.checkpoint import load_checkpoint

    path = Path(path).expanduser()
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ModelError(f"model.weights={path} {what}: give the path of a saved state dict.")
    if path.stat().st_size > MAX_BYTES:
        raise ModelError(f"model.weights={path} is larger than {MAX_BYTES >> 30} GiB.")
    digest = sha256_file(path)
    named = HASH_IN_NAME.search(path.name)
    if named and not digest.startswith(named.group(1)):
        raise ModelError(
            f"model.weights={path}: its SHA-256 ({digest[:16]}...) does not start with the "
            f"{named.group(1)!r} its name promises: the download is damaged; fetch it again."
        )
    fix = "use a file written by torch.save (a state dict or a checkpoint holding one)"
    try:
        loaded = load_checkpoint(path, fix=fix, legacy=True)
    except UserError as e:
        raise ModelError(f"model.weights: {e}") from None
    return _state_dict(loaded, path), digest


def head_keys(model: nn.Module) -> set[str]:
    """The parameter names of the model's classifier: its last ``nn.Linear``."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return {f"{linears[-1]}.{p}" for p in ("weight", "bias")} if linears else set()


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def load_initial_weights(
    model: nn.Module, path: str | Path, *, replace_head: bool = False
) -> dict[str, Any]:
    """Copies the weights in ``path`` into ``model``; returns what was loaded (the path,
    the file's SHA-256, the head kept fresh, if any).

    Raises:
        ModelError: a file that cannot be read or verified, or weights that do not fit.
    """
    path = Path(path).expanduser()
    state, digest = read_state_dict(path)
    own = model.state_dict()
    head = head_keys(model)
    # BatchNorm counts its batches only since PyTorch 0.4.1; it starts older files' at 0
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith(BN_COUNTER))
    unexpected = sorted(state.keys() - own.keys())
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:4])}{' ...' * (len(missing) > 4)}"] * bool(missing)
        parts += [f"unexpected {', '.join(unexpected[:4])}{' ...' * (len(unexpected) > 4)}"] * bool(
            unexpected
        )
        raise ModelError(
            f"model.weights={path} is for another architecture than the configured model "
            f"({'; '.join(parts)}): check model.name and the options that shape it "
            f"(data.image_size, model.pretrained)."
        )
    wrong = {k: (state[k], own[k]) for k in state if state[k].shape != own[k].shape}
    fresh = sorted(head) if replace_head else []
    body = sorted(wrong.keys() - set(fresh))
    if body:
        key = body[0]
        theirs, ours = wrong[key]
        advice = (
            "set model.replace_head=true to train a fresh classifier on these weights"
            if set(body) <= head
            else "the checkpoint is for another architecture or size"
        )
        raise ModelError(
            f"model.weights={path}: {key} is {_shape(theirs)} in the file but {_shape(ours)} "
            f"in the model ({len(body)} such tensor{'s' * (len(body) > 1)}): {advice}."
        )
    kept = {k: own[k] for k in fresh}
    counters = {k: torch.zeros_like(own[k]) for k in own.keys() - state.keys()}
    model.load_state_dict({**state, **kept, **counters})
    return {"path": str(path), "sha256": digest, "fresh_head": fresh}


__all__ = ["HASH_IN_NAME", "STATE_KEYS", "head_keys", "load_initial_weights", "read_state_dict"]
