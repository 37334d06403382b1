"""Loss landscapes (Li et al. 2018): filter-normalised directions, grids that resume from
their HDF5 file, interpolation between checkpoints, and the plots."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import ce, data, mlp
from torch import nn

from common.errors import UserError
from common.sharpness import landscape
from common.sharpness.core import full_loss, measuring, weighted_batches
from common.sharpness.landscape import (
    interpolate,
    loss_landscape,
    random_direction,
    read_grid,
)
from common.sharpness.plots import plot_interpolation, plot_landscape

CPU = torch.device("cpu")


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12, 4),
    )


def batches64(n_batches: int = 2) -> list:
    return [(x.double(), y) for x, y in (data(seed=s, n=6 + s) for s in range(n_batches))]


def eval_loss(model: nn.Module, batches: list) -> float:
    """The full-data loss in eval mode, the model untouched."""
    with measuring(model):
        return full_loss(model, ce, weighted_batches(batches, CPU))


class Counting:
    """ce that counts its calls and raises from call number ``fail_at`` on."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, model, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("interrupted")
        return ce(model, batch)


def state_of(model: nn.Module) -> dict:
    """Everything that must survive a measurement bit for bit, storages included."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "storage": [p.data.data_ptr() for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
    }


def assert_state(model: nn.Module, before: dict) -> None:
    after = state_of(model)
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"
    assert after["storage"] == before["storage"]
    for g, h in zip(after["grad"], before["grad"], strict=True):
        assert (g is None and h is None) or torch.equal(g, h)
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]


# ---------------------------------------------------------------------------------------------
# Directions


def test_filter_normalisation_conv_and_linear():
    model = conv_net()
    d = random_direction(model, seed=3)
    assert d.keys() == dict(model.named_parameters()).keys()
    for name in ("0.weight", "4.weight"):
        w = dict(model.named_parameters())[name]
        assert d[name].shape == w.shape and d[name].dtype == w.dtype
        torch.testing.assert_close(
            d[name].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1), rtol=1e-6, atol=0
        )
        assert not torch.allclose(d[name], w)  # random, not the weight itself
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert torch.equal(d[name], torch.zeros_like(d[name]))

    kept = random_direction(model, seed=3, ignore_bias_bn=False)
    for name, w in model.named_parameters():
        if w.ndim == 1:
            torch.testing.assert_close(kept[name].norm(), w.detach().norm(), rtol=1e-6, atol=0)
        else:  # the same draws whatever ignore_bias_bn says
            assert torch.equal(kept[name], d[name])

    again = random_direction(model, seed=3)
    assert all(torch.equal(again[k], d[k]) for k in d)
    other = random_direction(model, seed=4)
    assert not torch.equal(other["0.weight"], d["0.weight"])
    assert random_direction(model, params="reference").keys() == {"0.weight", "4.weight"}


# ---------------------------------------------------------------------------------------------
# Grid values


def test_grid_centre_and_points_match_the_moved_model(tmp_path):
    model = mlp().double()
    batches = batches64()
    result = loss_landscape(model, ce, batches, path=tmp_path / "g.h5", steps=5)
    assert result.loss.shape == (5, 5) and result.done.all()
    assert result.x.tolist() == result.y.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    base = eval_loss(model, batches)
    assert result.loss[2, 2] == base and result.base_loss == base

    with h5py.File(tmp_path / "g.h5") as f:
        d1 = {k: torch.from_numpy(v[...]) for k, v in f["d1"].items()}
        d2 = {k: torch.from_numpy(v[...]) for k, v in f["d2"].items()}
    expected_d1 = random_direction(model, seed=0)
    assert all(torch.equal(d1[k], expected_d1[k]) for k in expected_d1)
    for i, j in [(0, 4), (3, 1), (4, 4)]:
        a, b = float(result.x[i]), float(result.y[j])
        moved = copy.deepcopy(model)
        for name, p in moved.named_parameters():
            p.data = p.data + a * d1[name] + b * d2[name]
        torch.testing.assert_close(result.loss[i, j], eval_loss(moved, batches), rtol=1e-12, atol=0)
    json.dumps(result.to_dict())  # a JSON-serialisable summary


def test_quadratic_landscape_along_d_is_exact(tmp_path):
    torch.manual_seed(1)  # not the direction's seed: W would be the direction itself
    model = nn.Module()
    model.weight = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    m = torch.randn(12, 12, dtype=torch.float64)
    a_mat = m @ m.T + torch.eye(12, dtype=torch.float64)

    def quadratic(model, batch):
        w = model.weight.flatten()
        return 0.5 * w @ a_mat @ w

    result = loss_landscape(
        model, quadratic, [torch.zeros(1)], path=tmp_path / "q.h5", steps=7, span=(-2, 1), dims=1
    )
    assert result.y is None and result.loss.shape == (7,)
    w = model.weight.detach().flatten()
    d = random_direction(model)["weight"].flatten()
    coeffs = torch.from_numpy(result.x)
    expected = 0.5 * coeffs**2 * (d @ a_mat @ d) + coeffs * ((a_mat @ w) @ d) + 0.5 * w @ a_mat @ w
    np.testing.assert_allclose(result.loss, expected.numpy(), rtol=1e-12, atol=0)


def test_base_loss_off_the_grid_and_metric(tmp_path):
    model = mlp().double()
    batches = batches64()

    def accuracy(model, batch):
        x, y = batch
        return (model(x).argmax(1) == y).double().mean()

    result = loss_landscape(
        model, ce, batches, path=tmp_path / "m.h5", steps=4, dims=1, metric_fn=accuracy
    )
    assert 0.0 not in result.x
    assert result.base_loss == eval_loss(model, batches)
    assert result.metric.shape == (4,) and ((result.metric >= 0) & (result.metric <= 1)).all()
    with h5py.File(tmp_path / "m.h5") as f:
        assert f.attrs["base_loss"] == result.base_loss and f.attrs["metric"] == b"accuracy"


# ---------------------------------------------------------------------------------------------
# The file: resume, refusal, atomic creation


def test_interrupted_grid_resumes_and_matches_an_uninterrupted_one(tmp_path):
    model, batches = mlp(), [data(seed=1), data(seed=2, n=5)]  # two loss calls per point
    path = tmp_path / "r.h5"
    before = state_of(model)
    failing = Counting(fail_at=2 * 8 + 1)  # points 1..8 done: one full row and three more
    with pytest.raises(RuntimeError, match="interrupted"):
        loss_landscape(model, failing, batches, path=path, steps=5)
    assert_state(model, before)
    with h5py.File(path) as f:
        assert int(np.isfinite(f["loss"][...]).sum()) == 8 and int(f["done"][...].sum()) == 8
        assert np.isfinite(f["loss"][0]).all()

    counting = Counting()
    resumed = loss_landscape(model, counting, batches, path=path, steps=5)
    assert counting.calls == 2 * (25 - 8)
    fresh = loss_landscape(model, ce, batches, path=tmp_path / "fresh.h5", steps=5)
    assert np.array_equal(resumed.loss, fresh.loss)

    again = Counting()  # complete: nothing left to compute
    loss_landscape(model, again, batches, path=path, steps=5)
    assert again.calls == 0
    assert not os.path.exists(f"{path}.tmp")


@pytest.mark.parametrize(
    "change,option",
    [
        ({"seed": 1}, "seed"),
        ({"steps": 4}, "steps"),
        ({"span": (-0.5, 1.0)}, "span"),
        ({"dims": 1}, "dims"),
        ({"ignore_bias_bn": False}, "ignore_bias_bn"),
        ({"params": "reference"}, "params"),
        ({"metric_fn": ce}, "metric"),
        ({"data": [data()]}, "n_examples"),
        ({"model_seed": 5}, "model_sha256"),
    ],
)
def test_rerun_with_other_options_is_refused(tmp_path, change, option):
    path = tmp_path / "o.h5"
    loss_landscape(mlp(), ce, [data(), data(seed=2)], path=path, steps=3)
    options = {"steps": 3} | change
    model = mlp(seed=options.pop("model_seed", 0))
    batches = options.pop("data", [data(), data(seed=2)])
    before = path.read_bytes()
    with pytest.raises(UserError, match=f"{option}.*: saved .*, requested ") as info:
        loss_landscape(model, ce, batches, path=path, **options)
    assert isinstance(info.value, ValueError)  # as the option checks always raised
    assert_fix(info.value, path, "pass the saved ones to resume it, or delete it")
    assert path.read_bytes() == before


def test_refusal_names_the_saved_and_the_requested_values(tmp_path):
    path = tmp_path / "o.h5"
    loss_landscape(mlp(), ce, [data()], path=path, steps=3)
    with pytest.raises(UserError) as info:  # other shapes too: caught before any dataset
        loss_landscape(mlp(), ce, [data()], path=path, steps=4, dims=1, span=(-2, 2))
    message = str(info.value)
    for part in ["span: saved [-1.0, 1.0], requested [-2.0, 2.0]", "steps: saved 3, requested 4"]:
        assert part in message
    assert "dims: saved 2, requested 1" in message

    inter = tmp_path / "i.h5"
    interpolate(mlp(), ce, [data()], start=mlp(), end=mlp(seed=1), steps=3, path=inter)
    with pytest.raises(UserError, match="end_sha256 \\(end's weights differ\\): saved "):
        interpolate(mlp(), ce, [data()], start=mlp(), end=mlp(seed=2), steps=3, path=inter)


def test_failed_creation_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no directions")

    monkeypatch.setattr(landscape, "_draw_directions", broken)
    with pytest.raises(RuntimeError, match="no directions"):
        loss_landscape(mlp(), ce, [data()], path=tmp_path / "x.h5", steps=3)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# The file: integrity (checksums, row hashes, unusable files)

RESTART = "delete it and run the loss landscape again (it restarts from scratch)"


def assert_fix(error: BaseException, path, *parts: str) -> None:
    """A one-line UserError that names the file and says the fix."""
    message = str(error)
    assert isinstance(error, UserError) and "\n" not in message, message
    assert str(path) in message, message
    for part in parts:
        assert part in message, message


def finished(tmp_path, name: str = "g.h5") -> Path:
    path = tmp_path / name
    loss_landscape(mlp(), ce, [data()], path=path, steps=5)
    return path


def data_offset(ds: h5py.Dataset) -> int:
    """Where the values of ``ds`` start in the file (its first chunk's, if chunked)."""
    return ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset


def flip(path: Path, name: str, count: int = 4, mask: int = 0x5A) -> None:
    """XORs ``count`` bytes at the start of the values of dataset ``name`` with ``mask``."""
    with h5py.File(path) as f:
        start = data_offset(f[name])
    raw = bytearray(path.read_bytes())
    raw[start : start + count] = bytes(b ^ mask for b in raw[start : start + count])
    path.write_bytes(bytes(raw))


def refused(path: Path, tmp_path, *parts: str, plot: bool = True) -> None:
    """Resuming ``path`` (and plotting it) raise a UserError saying ``parts``; the file is
    left as it was and no plot is written."""
    before = path.read_bytes()
    with pytest.raises(UserError) as resumed:
        loss_landscape(mlp(), ce, [data()], path=path, steps=5)
    assert_fix(resumed.value, path, *parts)
    if plot:
        with pytest.raises(UserError) as plotted:
            plot_landscape(path, tmp_path / "plots" / "p")
        assert str(plotted.value) == str(resumed.value)
    assert path.read_bytes() == before and not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    "name,mask,problem,plot",
    [
        ("loss", 0x5A, "row 0 of 5 in 'loss' fails its checksum", True),
        ("done", 0x5A, "row 0 of 5 in 'done' fails its checksum", True),
        ("row_hash", 0x5A, "row 0 of 5 in 'row_hash' fails its checksum", True),
        ("xcoords", 0x5A, "'xcoords' fails its checksum", True),
        # ycoords[0] = -1.0 starts with 0x0000 0x0000, and Fletcher-32 (sums mod 65535)
        # cannot tell 0x0000 from 0xFFFF: the hash of the contents tells
        ("ycoords", 0xFF, "'ycoords' differs from its hash", True),
        ("d2/0.weight", 0x5A, "'d2/0.weight' fails its checksum", False),  # not plotted
    ],
)
def test_flipped_bytes_are_refused_when_resuming_and_plotting(tmp_path, name, mask, problem, plot):
    path = finished(tmp_path)
    flip(path, name, mask=mask)
    refused(path, tmp_path, f"{path} is damaged ({problem}): {RESTART}", plot=plot)


def test_flipped_bytes_in_an_interpolation_are_refused(tmp_path):
    path = tmp_path / "i.h5"
    kwargs = {"start": mlp(), "end": mlp(seed=1), "steps": 4, "path": path}
    interpolate(mlp(), ce, [data()], **kwargs)
    flip(path, "loss")
    fix = "is damaged (row 0 of 4 in 'loss' fails its checksum): delete it and run the "
    for call in (
        lambda: interpolate(mlp(), ce, [data()], **kwargs),
        lambda: plot_interpolation(path, tmp_path / "p"),
    ):
        with pytest.raises(UserError) as info:
            call()
        assert_fix(info.value, path, fix + "interpolation again (it restarts from scratch)")


def foreign(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=[1])


def an_interpolation(path: Path) -> None:
    path.unlink()
    interpolate(mlp(), ce, [data()], start=mlp(), end=mlp(seed=1), steps=3, path=path)


ANOTHER_PROGRAM = "move it away or delete it, then run the loss landscape again"


@pytest.mark.parametrize(
    "make,parts",
    [
        (lambda p: p.write_bytes(b""), ["is empty (0 bytes)", RESTART]),
        (
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
            ["is damaged or truncated (truncated file: eof = ", RESTART],
        ),
        (
            lambda p: p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size)),
            [f"is not an HDF5 file: {RESTART}"],
        ),
        (foreign, ["is not a loss landscape file (it has no 'kind' attribute", ANOTHER_PROGRAM]),
        (an_interpolation, ["(it is of kind 'interpolation'", ANOTHER_PROGRAM]),
    ],
    ids=["empty", "truncated", "garbage", "foreign", "other-kind"],
)
def test_unusable_files_are_refused(tmp_path, make, parts):
    path = finished(tmp_path)
    make(path)
    refused(path, tmp_path, *parts)


def rewritten(path: Path, version: int | None, checksums: bool = False) -> None:
    """``path`` as an older version wrote it: datasets contiguous, without checksums (or
    with), strings variable-length, ``format_version`` ``version`` (None: none)."""
    arrays = {}
    with h5py.File(path) as f:
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
        f.visititems(
            lambda n, o: arrays.update({n: o[...]}) if isinstance(o, h5py.Dataset) else None
        )
    with h5py.File(path, "w") as f:
        f.attrs.update({k: v for k, v in attrs.items() if k != "format_version"})
        if version is not None:
            f.attrs["format_version"] = version
        for name, array in arrays.items():
            f.create_dataset(name, data=array, fletcher32=checksums)


def other_shape(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        del f["loss"]
        f.create_dataset("loss", data=np.zeros(5), chunks=True, fletcher32=True)


@pytest.mark.parametrize(
    "make,parts",
    [
        (
            lambda p: rewritten(p, 1),
            [
                f"was written by an older version (format 1, without checksums) and cannot be "
                f"verified: {RESTART}"
            ],
        ),
        (lambda p: rewritten(p, None), ["(no format version, without checksums)", RESTART]),
        (lambda p: rewritten(p, 2), ["is damaged ('loss' has no checksums)", RESTART]),
        (lambda p: rewritten(p, 2, checksums=True), ["is damaged ('xcoords' has no hash)"]),
        (other_shape, ["is damaged ('loss' is float64 (5,), not float64 (5, 5))", RESTART]),
        (
            lambda p: rewritten(p, 3),
            ["a newer version (format 3; this one reads 2): use that version, or delete it"],
        ),
    ],
    ids=["format-1", "no-format", "no-checksums", "no-hash", "other-shape", "newer"],
)
def test_files_of_other_formats_are_refused(tmp_path, make, parts):
    path = finished(tmp_path)
    make(path)
    refused(path, tmp_path, *parts)


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: f["loss"].__setitem__((1, 2), 7.0),  # a value that the row's hash lacks
        lambda f: f["done"].__setitem__((1, slice(3, None)), 0),
        lambda f: f["row_hash"].__setitem__(1, 12345),
    ],
    ids=["loss", "done", "hash"],
)
def test_a_torn_row_is_computed_again_and_never_trusted(tmp_path, edit):
    """A row whose hash does not match its contents, as a kill between the writes of a
    point leaves it (each write with a valid checksum), reads as not computed."""
    path = finished(tmp_path)
    fresh = read_grid(path, "loss_landscape")["loss"]
    with h5py.File(path, "r+") as f:
        edit(f)
    saved = read_grid(path, "loss_landscape")
    assert not saved["done"][1].any() and np.isnan(saved["loss"][1]).all()
    assert saved["done"][[0, 2, 3, 4]].all()
    counting = Counting()
    resumed = loss_landscape(mlp(), counting, [data()], path=path, steps=5)
    assert counting.calls == 5 and np.array_equal(resumed.loss, fresh)
    assert np.array_equal(read_grid(path, "loss_landscape")["loss"], fresh)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 9, 10, 11, 12, 27])
def test_a_run_killed_between_writes_resumes_to_the_same_grid(tmp_path, kill_at):
    """kill -9 before the ``kill_at``-th write into the file (3 a point: loss, done, the
    row's hash): every point the file holds is right, and a resume computes the rest."""
    path = tmp_path / "k.h5"
    pid = os.fork()
    if pid == 0:  # the child: SIGKILL itself at that write
        try:
            torch.set_num_threads(1)  # the parent's OpenMP threads are not in a forked child
            writes, setitem = [0], h5py.Dataset.__setitem__

            def killing(ds, key, value):
                writes[0] += 1
                if writes[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                setitem(ds, key, value)

            h5py.Dataset.__setitem__ = killing
            loss_landscape(mlp(), ce, [data()], path=path, steps=3)
        finally:
            os._exit(1)
    for _ in range(600):
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child did not reach its kill")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    fresh = loss_landscape(mlp(), ce, [data()], path=tmp_path / "fresh.h5", steps=3).loss
    saved = read_grid(path, "loss_landscape")
    kept = saved["done"]
    assert np.array_equal(saved["loss"][kept], fresh[kept]) and np.isnan(saved["loss"][~kept]).all()
    counting = Counting()
    resumed = loss_landscape(mlp(), counting, [data()], path=path, steps=3)
    assert np.array_equal(resumed.loss, fresh) and counting.calls == 9 - int(kept.sum())


def test_non_finite_losses_measured_are_kept_resumed_and_plotted(tmp_path):
    inf, nan = float("inf"), float("nan")
    values = iter([1.0, inf, 2.0, nan, 0.5])  # one batch: one call per point

    def measured(model, batch):
        return torch.tensor(next(values))

    path = tmp_path / "n.h5"
    result = loss_landscape(mlp(), measured, [data()], path=path, steps=5, dims=1)
    expected = np.array([1.0, inf, 2.0, nan, 0.5])
    np.testing.assert_array_equal(result.loss, expected)  # NaN where NaN
    assert result.done.all() and result.to_dict()["n_nonfinite"] == 1
    counting = Counting()
    again = loss_landscape(mlp(), counting, [data()], path=path, steps=5, dims=1)
    assert counting.calls == 0
    np.testing.assert_array_equal(again.loss, expected)
    np.testing.assert_array_equal(read_grid(path, "loss_landscape")["loss"], expected)
    written = plot_landscape(path, tmp_path / "p")
    assert written == [str(tmp_path / "p_1d.png"), str(tmp_path / "p_1d.pdf")]


# ---------------------------------------------------------------------------------------------
# The model is left as it was


def test_model_bit_identical_after_a_run_and_after_an_error(tmp_path):
    model = mlp().train()
    model[0].weight.requires_grad_(False)
    ce(model, data()).backward()
    before = state_of(model)
    loss_landscape(model, ce, [data()], path=tmp_path / "a.h5", steps=3, params="reference")
    assert_state(model, before)
    with pytest.raises(RuntimeError):
        loss_landscape(model, Counting(fail_at=4), [data()], path=tmp_path / "b.h5", steps=3)
    assert_state(model, before)


# ---------------------------------------------------------------------------------------------
# Interpolation


def trained_bn(seed: int) -> nn.Module:
    """An MLP whose BatchNorm statistics moved off their initial values."""
    model = mlp(seed=seed)
    with torch.no_grad():
        model(data(seed=seed + 10)[0] * 3 + 1)
    return model


def test_interpolation_end_points_and_restore(tmp_path):
    batches = [data(), data(seed=2)]
    start, end = trained_bn(1), trained_bn(2)
    torch.save(end.state_dict(), tmp_path / "end.pt")
    model = trained_bn(3).train()
    before = state_of(model)
    buffer_ids = [id(b) for b in model.buffers()]

    result = interpolate(
        model,
        ce,
        batches,
        start=start.state_dict(),
        end=tmp_path / "end.pt",
        steps=5,
        span=(-0.5, 1.5),
        path=tmp_path / "i.h5",
    )
    assert result.t.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert result.start_loss == eval_loss(start, batches)
    assert result.end_loss == eval_loss(end, batches)
    assert_state(model, before)
    assert [id(b) for b in model.buffers()] == buffer_ids
    json.dumps(result.to_dict())

    counting = Counting()  # the file resumes: nothing to recompute
    again = interpolate(
        model,
        counting,
        batches,
        start=start,
        end=end,
        steps=5,
        span=(-0.5, 1.5),
        path=tmp_path / "i.h5",
    )
    assert counting.calls == 0 and np.array_equal(again.loss, result.loss)

    same = interpolate(model, ce, batches, start=start, end=start.state_dict(), steps=4)
    assert np.all(same.loss == same.loss[0]) and same.loss[0] == eval_loss(start, batches)
    with pytest.raises(RuntimeError):
        interpolate(model, Counting(fail_at=3), batches, start=start, end=end, steps=4)
    assert_state(model, before)


def test_interpolation_takes_integer_buffers_from_start():
    start, end = trained_bn(1), trained_bn(2)
    end[1].num_batches_tracked.fill_(7)
    seen = []

    def spy(model, batch):
        seen.append(int(model[1].num_batches_tracked))
        return ce(model, batch)

    interpolate(mlp(), spy, [data()], start=start, end=end, steps=3)
    assert seen == [1, 1, 1]


def test_interpolation_rejects_a_foreign_state():
    state = mlp().state_dict()
    del state["0.bias"]
    with pytest.raises(ValueError, match="start"):
        interpolate(mlp(), ce, [data()], start=state, end=mlp().state_dict())
    with pytest.raises(ValueError, match="end"):
        interpolate(mlp(), ce, [data()], start=mlp().state_dict(), end=mlp(bn=False))


# ---------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"steps": 1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"dims": 3}, "dims"),
        ({"span": (1.0, 1.0)}, "span"),
        ({"span": (1.0, -1.0)}, "span"),
        ({"span": (0.0,)}, "span"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        loss_landscape(mlp(), ce, [data()], path=tmp_path / "b.h5", **kwargs)
    if name != "dims":
        with pytest.raises(ValueError, match=name):
            interpolate(mlp(), ce, [data()], start=mlp(), end=mlp(seed=1), **kwargs)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Plots


def test_plots_write_png_and_pdf_also_with_missing_points(tmp_path):
    model, batches = mlp(), [data()]
    with pytest.raises(RuntimeError):  # interrupted after 15 points
        loss_landscape(model, Counting(16), batches, path=tmp_path / "two.h5", steps=5)
    one = loss_landscape(model, ce, batches, path=tmp_path / "one.h5", steps=5, dims=1)
    with h5py.File(tmp_path / "one.h5", "r+") as f:  # rows torn: they count as not computed
        f["done"][3:] = 0
    assert np.isnan(read_grid(tmp_path / "one.h5", "loss_landscape")["loss"][3:]).all()
    inter = interpolate(
        model, ce, batches, start=mlp(seed=1), end=mlp(seed=2), steps=4, path=tmp_path / "i.h5"
    )

    written = plot_landscape(tmp_path / "two.h5", tmp_path / "plots" / "two", levels=10, log=True)
    written += plot_landscape(one, tmp_path / "plots" / "one")
    written += plot_interpolation(inter, tmp_path / "plots" / "inter")
    assert plot_interpolation(tmp_path / "i.h5", tmp_path / "plots" / "inter") == written[-2:]
    stems = ["two_contour", "two_contourf", "two_surface", "one_1d", "inter_interpolation"]
    expected = [str(tmp_path / "plots" / f"{s}.{e}") for s in stems for e in ("png", "pdf")]
    assert sorted(written) == sorted(expected)
    assert all(os.path.getsize(p) > 0 for p in written)
    assert sorted(os.listdir(tmp_path / "plots")) == sorted(os.path.basename(p) for p in written)


def test_direction_is_independent_of_a_model_seeded_the_same_way():
    # torch.manual_seed(0) then torch.randn(...) is how many models are initialised; a
    # generator seeded with plain 0 would replay it and return d = W after normalisation
    torch.manual_seed(0)
    weight = torch.randn(3, 4)
    model = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    d = random_direction(model, seed=0)["weight"]
    assert not torch.allclose(d, weight)
    cosine = torch.nn.functional.cosine_similarity(d.flatten(), weight.flatten(), dim=0)
    assert abs(float(cosine)) < 0.9
