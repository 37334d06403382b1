"""Checkpoints: written atomically, read with ``weights_only=True``, RNG states included."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import RunDirError, UserError, first_line
from common.io import FileRefused, atomic_path, check_regular_file


def serialize(state: dict[str, Any]) -> bytes:
    """``state`` as the bytes ``torch.save`` writes (a zip archive with a CRC per record)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def write_checkpoint(path: str | Path, data: bytes) -> None:
    """Writes serialized checkpoint bytes atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then an atomic rename."""
    write_checkpoint(path, serialize(state))


def _damaged(path: Path, why: str, fix: str) -> UserError:
    return UserError(f"checkpoint {path} is damaged ({why}); {fix}")


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    fix: str | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """Reads a checkpoint after verifying every record's CRC-32 (``torch.save`` writes them,
    ``torch.load`` does not check them), without unpickling code (``weights_only=True``).

    ``fix``: what the message tells the user to do with a damaged file. ``legacy``: also
    read the format torch.save wrote before PyTorch 1.6 (not a zip: it has no CRC records,
    so only ``torch.load`` itself checks it), as many published checkpoints still are.
    """
    path = Path(path)
    fix = fix or "delete it and train again"
    try:
        check_regular_file(path)  # a FIFO would block the zip reader
        if not (legacy and _is_legacy(path)):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every record, compares its CRC
                if bad is not None:
                    raise _damaged(path, f"record {bad} fails its CRC check", fix)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}: train the run first") from None
    except FileRefused as e:
        raise UserError(f"{e}: {fix}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        why = "empty file" if path.stat().st_size == 0 else f"{type(e).__name__}: {e}"
        raise _damaged(path, why, fix) from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # wrong format, disallowed pickle global, a cut legacy file
        raise UserError(f"cannot read checkpoint {path} ({first_line(e)}): {fix}") from None


def _is_legacy(path: Path) -> bool:
    """A pre-1.6 torch.save file: a pickle (protocol 2, ``0x80 0x02``) rather than a zip."""
    with open(path, "rb") as file:
        return file.read(2) == b"\x80\x02"


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """``ckpt["model"]`` into ``model``; weights of another architecture (the run
    directory's config edited after training) are one message, not a state_dict traceback."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RunDirError(
            f"{path} does not fit the model the run's config builds "
            f"({str(e).splitlines()[0]}): the run directory's config and weights disagree"
        ) from None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
