"""GGN and empirical Fisher operators against dense float64 matrices formed explicitly
(Jacobians by torch.func.jacrev, per-example gradients by a loop), the estimators on them,
the config key and the measurement end to end."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from common.checks import OptionError
from common.sharpness import hessian_eigenvalues, hessian_esd, hessian_trace
from common.sharpness.core import measuring, weighted_batches
from common.sharpness.curvature import (
    FisherOperator,
    GGNOperator,
    OutputLoss,
    make_operator,
)
from common.sharpness.hvp import HessianOperator

CPU = torch.device("cpu")


def ce_split() -> OutputLoss:
    return OutputLoss(lambda m, b: m(b[0]), lambda z, b: nn.functional.cross_entropy(z, b[1]))


def mse_split() -> OutputLoss:
    return OutputLoss(lambda m, b: m(b[0]), lambda z, b: nn.functional.mse_loss(z, b[1]))


def mlp(seed: int = 0, out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, out)).double()


def cnn(seed: int = 0) -> nn.Module:
    """Conv, BatchNorm (eval: running statistics), pooling: per-example gradients by vmap."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(8, 3),
    ).double()  # fmt: skip
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def classes(n: int, shape: tuple[int, ...], seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[:4], y[:4]), (x[4:], y[4:])]  # two batches of different sizes


def flat_params(model: nn.Module):
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflat(vec: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, p in named:
            out[name] = vec[i : i + p.numel()].reshape(p.shape)
            i += p.numel()
        return out

    return flat, unflat


def dense_ggn(model: nn.Module, split: OutputLoss, batches) -> torch.Tensor:
    """Σ_b (n_b/N) J_bᵀ H_b J_b with J_b by jacrev and H_b the outputs' loss Hessian."""
    flat, unflat = flat_params(model)
    n = sum(len(b[1]) for b in batches)
    total = torch.zeros(flat.numel(), flat.numel(), dtype=torch.float64)
    for b in batches:
        jac = jacrev(lambda v, b=b: functional_call(model, unflat(v), (b[0],)))(flat)
        z = model(b[0]).detach()
        jac = jac.reshape(z.numel(), -1)
        h = torch.autograd.functional.hessian(
            lambda zz, b=b, z=z: split.criterion(zz.reshape(z.shape), b), z.reshape(-1)
        )
        total += len(b[1]) / n * jac.T @ h @ jac
    return total


def per_example_gradients(model: nn.Module, loss_fn, batches) -> torch.Tensor:
    """(N, P): one backward pass per example, each a batch of one."""
    params = list(model.parameters())
    rows = []
    for b in batches:
        for i in range(len(b[1])):
            grads = torch.autograd.grad(loss_fn(model, tuple(t[i : i + 1] for t in b)), params)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def dense_fisher(model: nn.Module, loss_fn, batches) -> torch.Tensor:
    g = per_example_gradients(model, loss_fn, batches)
    return g.T @ g / g.shape[0]


def operator(cls, model, loss_fn, batches, **kwargs):
    return cls(model, loss_fn, weighted_batches(batches, CPU), list(model.parameters()), **kwargs)


def block(dim: int, m: int = 5, seed: int = 2) -> torch.Tensor:
    return torch.randn(m, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CASES = {"mlp": (mlp, (3,)), "cnn": (cnn, (1, 5, 5))}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("keep", "batched"), [(False, False), (True, True), (False, True)])
def test_ggn_products_are_the_dense_ggn(case, keep, batched):
    build, shape = CASES[case]
    model, batches, split = build(), classes(10, shape), ce_split()
    ggn = dense_ggn(model, split, batches)
    v = block(ggn.shape[0])
    op = operator(GGNOperator, model, split, batches, keep_graphs=keep, batched=batched)
    torch.testing.assert_close(op.matmat(v), v @ ggn, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v[0]), ggn @ v[0], rtol=1e-10, atol=1e-12)
    # one batch's own: its share of G is n_b / N of it
    own = dense_ggn(model, split, batches[1:])
    torch.testing.assert_close(op.batch_matmat(v, 1), v @ own, rtol=1e-10, atol=1e-12)
    assert op.products == 5 * 2 + 1 * 2 + 5


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("keep", "chunk"), [(False, None), (True, 3)])
def test_fisher_products_are_the_dense_empirical_fisher(case, keep, chunk):
    build, shape = CASES[case]
    model, batches, split = build(), classes(10, shape), ce_split()
    fisher = dense_fisher(model, split, batches)
    v = block(fisher.shape[0])
    op = operator(FisherOperator, model, split, batches, keep_graphs=keep, chunk_size=chunk)
    for _ in range(2):  # the second call reads the kept gradients, or computes them again
        torch.testing.assert_close(op.matmat(v), v @ fisher, rtol=1e-10, atol=1e-12)
    assert op.per_example == "vmap" and op.keep_graphs == keep
    # tr(F) is the mean squared norm of the per-example gradients
    g = per_example_gradients(model, split, batches)
    assert float(torch.trace(fisher)) == pytest.approx(float((g * g).sum(1).mean()), rel=1e-12)


def test_fisher_falls_back_to_a_loop_where_vmap_fails_and_says_why():
    class Branchy(nn.Module):  # data-dependent control flow: vmap cannot run it
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x) if bool(x.sum() > -100) else -self.net(x)

    model, batches, split = Branchy(), classes(10, (3,)), ce_split()
    fisher = dense_fisher(model, split, batches)
    v = block(fisher.shape[0])
    op = operator(FisherOperator, model, split, batches)
    with pytest.warns(UserWarning, match="one backward pass per example, vmap failed"):
        got = op.matmat(v)
    torch.testing.assert_close(got, v @ fisher, rtol=1e-10, atol=1e-12)
    assert op.per_example.startswith("loop (vmap failed: ")


def test_ggn_is_the_hessian_for_a_linear_model_with_squared_error():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(9, 2, generator=g, dtype=torch.float64)
    batches, split = [(x[:5], y[:5]), (x[5:], y[5:])], mse_split()
    v = block(8, m=8)
    ggn = operator(GGNOperator, model, split, batches).matmat(v)
    hessian = operator(HessianOperator, model, split, batches).matmat(v)
    torch.testing.assert_close(ggn, hessian, rtol=1e-13, atol=1e-14)
    assert float(ggn.abs().max()) > 0.1


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_ggn_is_positive_semi_definite_where_the_hessian_is_not(loss):
    model = mlp(seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    if loss == "mse":
        split, y = mse_split(), torch.randn(12, 3, generator=g, dtype=torch.float64)
    else:
        split, y = ce_split(), torch.randint(0, 3, (12,), generator=g)
    eye = torch.eye(31, dtype=torch.float64)
    ggn = torch.linalg.eigvalsh(operator(GGNOperator, model, split, [(x, y)]).matmat(eye))
    hessian = torch.linalg.eigvalsh(operator(HessianOperator, model, split, [(x, y)]).matmat(eye))
    assert ggn.min() >= -1e-12 * ggn.max()
    assert hessian.min() < -1e-6  # the term the GGN leaves out makes the Hessian indefinite


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_trace_eigenvalues_and_density_of_each_operator_are_exact(kind):
    model, batches, split = mlp(), classes(10, (3,)), ce_split()
    dense = (
        dense_ggn(model, split, batches) if kind == "ggn" else dense_fisher(model, split, batches)
    )
    exact = torch.linalg.eigvalsh(dense)
    dim = dense.shape[0]
    # Hutch++ with a sketch of every dimension takes the trace exactly
    r = hessian_trace(model, split, batches, n_probes=3 * dim, method="hutch++", operator=kind)
    assert r.total == pytest.approx(float(exact.sum()), rel=1e-9)
    assert r.record.options["operator"] == kind
    e = hessian_eigenvalues(model, split, batches, k=3, tol=1e-10, operator=kind)
    assert e.eigenvalues == pytest.approx(exact.flip(0)[:3].tolist(), rel=1e-7)
    # a Lanczos run of every dimension: each Ritz value is an eigenvalue
    d = hessian_esd(model, split, batches, n_iter=dim, operator=kind)
    nodes = torch.tensor(d.nodes[0], dtype=torch.float64)
    assert (nodes[:, None] - exact[None, :]).abs().min(1).values.max() < 1e-8 * exact.max()
    assert sum(d.weights[0]) == pytest.approx(1.0)
    # and Hutchinson agrees within its standard error (each probe through both batches)
    h = hessian_trace(model, split, batches, n_probes=200, seed=1, operator=kind)
    assert abs(h.total - float(exact.sum())) < 4 * h.stderr


def test_operator_options_are_checked_in_one_line():
    model, batches = mlp(), classes(10, (3,))

    def plain(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    with pytest.raises(OptionError, match=r"operator=gn is not a curvature matrix: use one of"):
        hessian_trace(model, plain, batches, operator="gn")
    with pytest.raises(OptionError, match=r"operator=ggn needs .* loss_fn=OutputLoss"):
        hessian_eigenvalues(model, plain, batches, operator="ggn")
    # a plain loss is enough for the Fisher; the default (the Hessian) is unchanged
    assert hessian_trace(model, plain, batches, n_probes=3, operator="fisher").total > 0
    default = hessian_trace(model, plain, batches, n_probes=5, seed=2)
    assert hessian_trace(model, plain, batches, n_probes=5, seed=2, operator="hessian") == default
    assert default.record.options["operator"] == "hessian"


def test_the_config_key_lists_its_choices():
    from common.train.config import ConfigError, load_config
    from image_exps.task import ImageConfig

    assert load_config(ImageConfig, None).hessian.operator == "hessian"
    assert load_config(ImageConfig, None, ["hessian.operator=fisher"]).hessian.operator == "fisher"
    with pytest.raises(ConfigError, match=r"hessian\.operator must be one of hessian, ggn, fisher"):
        load_config(ImageConfig, None, ["hessian.operator=gn"])


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"class_weight": True}])
def test_a_task_split_is_its_own_loss_with_its_options(options):
    """The image and ECG domains' Task (model(x), cross-entropy): the split is the task's
    loss bit for bit, label smoothing and class weights included, and the GGN's output
    Hessian is that loss's."""
    from common.measurements.hessian import output_loss
    from image_exps.task import TASK

    model, batches = mlp(), classes(10, (3,))
    if options.get("class_weight"):
        options = {"class_weight": torch.tensor([0.5, 2.0, 1.0])}  # float32, as the outputs
    split, loss = output_loss(TASK, **options), TASK.loss_fn(**options)
    for b in batches:
        assert torch.equal(split(model, b), loss(model, b))
    v = block(31)
    got = operator(GGNOperator, model, split, batches).matmat(v)
    # Task.loss takes the criterion of float32 outputs (outputs.float()), here as there
    torch.testing.assert_close(got, v @ dense_ggn(model, split, batches), rtol=1e-5, atol=1e-7)


def test_a_graph_batch_gets_the_ggn_and_a_per_example_loop():
    """The graph domain: PyG batches, whose examples are graphs; the split comes from its
    Task alike; the Fisher's examples are graphs sliced one by one."""
    from torch_geometric.data import Batch, Data

    from common.measurements.hessian import output_loss
    from graph_exps.models import build_graph_model
    from graph_exps.task import TASK

    torch.manual_seed(0)
    graphs = [
        Data(x=torch.randn(n, 3, dtype=torch.float64), edge_index=torch.randint(0, n, (2, 2 * n)),
             y=torch.tensor([n % 2]))
        for n in (3, 4, 5, 6, 4)
    ]  # fmt: skip
    batch = Batch.from_data_list(graphs)
    model = build_graph_model("gcn", 3, 2, hidden=4, layers=2, batch_norm=False).double()
    split = output_loss(TASK)
    assert torch.equal(split(model, batch), TASK.loss_fn()(model, batch))
    params = list(model.parameters())
    flat, unflat = flat_params(model)
    jac = torch.autograd.functional.jacobian(
        lambda v: functional_call(model, unflat(v), (batch,)), flat
    ).reshape(-1, flat.numel())
    z = model(batch).detach()
    h = torch.autograd.functional.hessian(
        lambda zz: split.criterion(zz.reshape(z.shape), batch), z.reshape(-1)
    )
    rows = []
    for graph in graphs:
        one = Batch.from_data_list([graph])
        rows.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(split(model, one), params)])
        )
    g = torch.stack(rows)
    v = block(flat.numel(), m=3)
    with measuring(model):
        ggn, _ = make_operator(model, split, [batch], None, None, None, "ggn")
        fisher, _ = make_operator(model, split, [batch], None, None, None, "fisher")
        # the Task's criterion sees float32 outputs (Task.loss): float32 agreement
        torch.testing.assert_close(ggn.matmat(v), v @ (jac.T @ h @ jac), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(fisher.matmat(v), v @ (g.T @ g / 5), rtol=1e-10, atol=1e-12)
    assert fisher.per_example.endswith("is not a batch of tensors with the examples on dim 0)")


def test_a_text_batch_gets_the_ggn_and_the_fisher():
    """The text domain: dict batches through a Hugging Face model (a tiny BERT), whose
    logits its Task's forward reads; vmap runs it or the loop does, to the same result."""
    from transformers import BertForSequenceClassification

    from common.measurements.hessian import output_loss
    from text_exps.synthetic import tiny_bert_config
    from text_exps.task import TASK

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(2)).double().eval()
    ids = torch.randint(5, 30, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.tensor([0, 1, 1, 0])}  # fmt: skip
    split = output_loss(TASK)
    assert torch.equal(split(model, batch), TASK.loss_fn()(model, batch))
    chosen = ["classifier.weight", "bert.pooler.dense.bias"]  # a few columns of each matrix
    with measuring(model):
        ops = {k: make_operator(model, split, [batch], chosen, None, None, k)[0]
               for k in ("ggn", "fisher", "hessian")}  # fmt: skip
        v = block(ops["ggn"].dim, m=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            products = {k: op.matmat(v) for k, op in ops.items()}
        reference = make_operator(model, split, [batch], chosen, None, None, "fisher")[0]
        reference.per_example = "loop (reference)"
        torch.testing.assert_close(products["fisher"], reference.matmat(v), rtol=1e-9, atol=1e-12)
    # Hugging Face's attention-mask checks are data-dependent control flow: vmap, if it
    # fails, is said to have failed and why
    assert ops["fisher"].per_example == "vmap" or "vmap failed" in ops["fisher"].per_example
    for got in products.values():
        assert got.shape == v.shape and torch.isfinite(got).all() and got.abs().max() > 0


def test_the_measurement_names_its_operator_end_to_end(tmp_path, capsys):
    from common import tables
    from common.measurements.hessian import read
    from common.train import cli
    from image_exps.task import TASK

    run_dir = tmp_path / "runs" / "sgd"
    assert cli.train_main(TASK, ["smoke=true", "train.progress=false", f"run_dir={run_dir}"]) == 0
    base = [f"run_dir={run_dir}", "train.progress=false", "hessian.n_probes=3"]
    for kind, title in (("fisher", "Fisher"), ("ggn", "GGN")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the image model's Fisher runs under vmap
            options = [f"hessian.operator={kind}", "hessian.esd=true", "hessian.esd_iter=3"]
            assert cli.measure_main(TASK, "hessian", [*base, *options]) == 0
        assert f"{title} trace " in capsys.readouterr().out
        out = json.loads((run_dir / "hessian.json").read_text())
        assert out["operator"] == kind == out["options"]["operator"]
        for part in ("trace", "eigenvalues", "esd"):
            assert out[part]["record"]["options"]["operator"] == kind
        row = read(out)
        assert row[f"{kind}_trace"] == out["trace"]["total"] > 0 and "trace" not in row
        assert row[f"{kind}_top_eigenvalue"] > 0
    assert tables.main([str(tmp_path / "runs"), "--out", str(tmp_path / "tables")]) == 0
    text = (tmp_path / "tables" / "table.md").read_text()
    assert "### GGN trace" in text and "### Hessian trace" not in text
    header = (tmp_path / "tables" / "runs.md").read_text().splitlines()[0]
    assert "| GGN trace |" in header and "| Hessian trace |" not in header  # its own columns
    with open(tmp_path / "tables" / "runs.csv") as f:
        assert {"ggn_trace", "ggn_top_eigenvalue"} <= set(next(csv.reader(f)))
    assert cli.measure_main(TASK, "hessian", [*base, "hessian.operator=gn"]) == 2
    assert "hessian.operator must be one of hessian, ggn, fisher" in capsys.readouterr().err
    # the default writes what it wrote before, and the Hessian's row keys
    assert cli.measure_main(TASK, "hessian", base) == 0
    out = json.loads((run_dir / "hessian.json").read_text())
    assert out["operator"] == "hessian" and set(read(out)) >= {"trace", "top_eigenvalue"}


def test_a_task_whose_loss_is_not_its_criterion_of_its_outputs_is_refused():
    from common.errors import UserError
    from common.measurements.hessian import _check_split

    model, batches, split = mlp(), classes(10, (3,)), ce_split()

    def other(m, b):
        return split(m, b) + 1.0  # e.g. a regulariser a Task subclass adds in its loss

    _check_split(split, split, model, batches)
    with pytest.raises(UserError, match=r"hessian\.operator=ggn: the task's loss"):
        _check_split(split, other, model, batches)
