"""Every model from one table: shapes, seeded init, gradients against finite
differences, loss going down under optim.SGD through the parameter-server
path, evaluate; then digits accuracy, batch-norm recalibration, sparse rows,
and every refusal's message."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

import pytest
import torch

from asyncps import optim
from asyncps.ps import Layout
from asyncps.workers import DataShard, DenseSplit, build_model, load_dataset, loss_and_grad, MODELS
from asyncps.workers.dense_models import CALIBRATION_EXAMPLES

DATA = {
    "digits": ("digits", {}),
    "sparse": ("sparse_synthetic", {"num_examples": 2_000, "num_features": 300, "nnz": 5}),
    "ratings": ("matrix_completion", {"num_users": 60, "num_items": 40, "rank": 3, "observed": 0.5}),
}


@pytest.fixture
def one_thread():
    """Timing-bound tests run single-threaded: steady on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets():
    return {key: load_dataset(name, **options) for key, (name, options) in DATA.items()}


@dataclass(frozen=True)
class Case:
    name: str
    data: str
    options: dict = field(default_factory=dict)
    lr: float = 0.1  # plain SGD rate for the loss-goes-down test

    @property
    def id(self) -> str:
        return self.name + "".join(f",{k}={v}" for k, v in self.options.items())


CASES = [
    Case("softmax", "digits", lr=1.0),
    Case("softmax", "digits", {"batch_norm": True}, lr=0.3),
    Case("mlp", "digits", {"hidden": [16, 8]}, lr=0.3),
    Case("mlp", "digits", {"hidden": [16], "batch_norm": True}, lr=0.3),
    Case("cnn", "digits", lr=0.3),
    Case("cnn", "digits", {"batch_norm": True}),
    Case("sparse_logreg", "sparse", lr=1.0),
    Case("sparse_logreg", "sparse", {"l2": 1e-3}, lr=1.0),
    # Each row appears about once a batch and gets 1/|B| of the mean loss's gradient: a large rate.
    Case("matrix_factorization", "ratings", lr=3.0),
    Case("matrix_factorization", "ratings", {"rank": 4, "l2": 1e-3}, lr=3.0),
]
IDS = [c.id for c in CASES]


def make(case: Case, datasets):
    data = datasets[case.data]
    return build_model(case.name, data.meta, train=data.train, **case.options), data


def train(model, split, opt, steps: int, batch_size: int, seed: int = 0):
    """The single-process parameter-server loop: pull, loss_and_grad, push through an optimizer."""
    dense, tables = model.init(seed)
    flat = Layout(model.dense).flatten(dense)
    state = opt.init(flat)
    table_state = {name: opt.init(table) for name, table in tables.items()}
    for batch in islice(DataShard(split, 0, 1, batch_size=batch_size, seed=seed), steps):
        ids = model.rows(batch)
        _, grad, row_grads = loss_and_grad(model, flat, {t: tables[t][ids[t]] for t in ids}, batch)
        opt.step(flat, grad, state)
        for t in ids:
            opt.step_rows(tables[t], ids[t], row_grads[t], table_state[t])
    return Layout(model.dense).unflatten(flat), tables


def test_every_model_has_a_case():
    assert {c.name for c in CASES} == set(MODELS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_init_matches_the_declared_shapes_and_is_seeded(case, datasets):
    model, _ = make(case, datasets)
    rng_before = torch.random.get_rng_state()
    dense, tables = model.init(7)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global generator is left alone
    assert {k: tuple(v.shape) for k, v in dense.items()} == model.dense
    assert {k: tuple(v.shape) for k, v in tables.items()} == model.tables
    assert all(v.dtype == torch.float32 for v in [*dense.values(), *tables.values()])
    again = model.init(7)
    for mine, theirs in ((dense, again[0]), (tables, again[1])):
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    if case.name != "sparse_logreg":  # logistic regression starts at zero whatever the seed
        other = model.init(8)
        assert any(not torch.equal(v, {**other[0], **other[1]}[k]) for k, v in {**dense, **tables}.items())


def float64_batch(batch):
    return DenseSplit(batch.x.double(), batch.y) if isinstance(batch, DenseSplit) else batch


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_finite_differences(case, datasets):
    model, data = make(case, datasets)
    batch = float64_batch(data.train.subset(torch.arange(8)))
    dense, tables = model.init(0)
    for table in tables.values():  # off zero, so that every term of the gradient is exercised
        table.add_(0.1 * torch.randn(table.shape, generator=torch.Generator().manual_seed(1)))
    ids = model.rows(batch)
    flat = Layout(model.dense).flatten(dense).double().requires_grad_()
    rows = [tables[t][ids[t]].double().requires_grad_() for t in model.tables]

    def loss(flat, *rows):
        return model.loss(Layout(model.dense).unflatten(flat), dict(zip(model.tables, rows)), batch)

    assert torch.autograd.gradcheck(loss, (flat, *rows), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_goes_down_under_plain_sgd(case, datasets, one_thread):
    model, data = make(case, datasets)
    before = model.evaluate(*model.init(0), data.train)["loss"]
    dense, tables = train(model, data.train, optim.SGD(lr=case.lr), steps=60, batch_size=32)
    after = model.evaluate(dense, tables, data.train)["loss"]
    assert after < 0.9 * before


@pytest.mark.parametrize("case", [c for c in CASES if not c.options.get("batch_norm") and not c.options.get("l2")],
                         ids=lambda c: c.id)
def test_evaluate_loss_is_the_training_loss_on_the_whole_split(case, datasets):
    model, data = make(case, datasets)
    dense, tables = model.init(3)
    for table in tables.values():
        table.add_(0.1)
    split = data.test
    ids = model.rows(split)
    expected = model.loss(dense, {t: tables[t][ids[t]] for t in ids}, split).item()
    metrics = model.evaluate(dense, tables, split)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert set(metrics) == ({"loss", "rmse"} if case.name == "matrix_factorization" else {"loss", "accuracy"})
    assert all(isinstance(v, float) for v in metrics.values())


# -- the CNN on MNIST- and CIFAR-10-sized images -----------------------------------------

@pytest.mark.parametrize("shape, features", [((1, 28, 28), 32 * 7 * 7), ((3, 32, 32), 32 * 8 * 8),
                                             ((1, 8, 8), 32 * 2 * 2)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_cnn_sizes_its_layers_from_the_input_shape_and_learns(shape, features, batch_norm, one_thread):
    gen = torch.Generator().manual_seed(0)
    split = DenseSplit(torch.rand(16, *shape, generator=gen), torch.arange(16) % 10)
    model = build_model("cnn", {"input_shape": shape, "num_classes": 10}, train=split, batch_norm=batch_norm)
    assert model.dense["conv1.weight"] == (16, shape[0], 3, 3) and model.dense["fc.weight"] == (10, features)
    dense, _ = train(model, split, optim.Adam(lr=0.01), steps=20, batch_size=16)
    assert model.evaluate(dense, {}, split)["loss"] < 0.5 * model.evaluate(*model.init(0), split)["loss"]


# -- digits accuracy -----------------------------------------------------------------

ACCURACY = [  # (model, options, Adam lr, epochs); measured test accuracy in the comment (seed 0)
    ("softmax", {}, 0.03, 10),                    # 0.936
    ("softmax", {"batch_norm": True}, 0.01, 5),   # 0.950
    ("mlp", {}, 0.03, 5),                         # 0.961
    ("mlp", {"batch_norm": True}, 0.01, 5),       # 0.958
    ("cnn", {}, 0.01, 5),                         # 0.958
    ("cnn", {"batch_norm": True}, 0.01, 5),       # 0.975
]


@pytest.mark.parametrize("name, options, lr, epochs", ACCURACY, ids=[f"{n}{o}" for n, o, _, _ in ACCURACY])
def test_dense_models_exceed_90_percent_on_digits(name, options, lr, epochs, datasets, one_thread):
    data = datasets["digits"]
    model = build_model(name, data.meta, train=data.train, **options)
    steps = epochs * -(-len(data.train) // 32)
    dense, tables = train(model, data.train, optim.Adam(lr=lr), steps=steps, batch_size=32)
    assert model.evaluate(dense, tables, data.test)["accuracy"] > 0.9


# -- batch norm -----------------------------------------------------------------------

def test_batch_norm_evaluate_recalibrates_on_training_data(datasets):
    data = datasets["digits"]
    model = build_model("softmax", data.meta, train=data.train, batch_norm=True)
    dense, _ = model.init(0)
    net = model.calibrated(dense, data.train)
    pixels = data.train.x[:CALIBRATION_EXAMPLES].flatten(1)
    assert torch.allclose(net.bn.running_mean, pixels.mean(0), atol=1e-6)
    assert torch.allclose(net.bn.running_var, pixels.var(0), atol=1e-6)
    assert not net.training


def test_batch_norm_predictions_do_not_depend_on_the_rest_of_the_split(datasets):
    data = datasets["digits"]
    model = build_model("cnn", data.meta, train=data.train, batch_norm=True)
    dense, _ = model.init(0)
    halves = data.test.subset(torch.arange(100)), data.test.subset(torch.arange(100, 300))
    whole = model.evaluate(dense, {}, data.test.subset(torch.arange(300)))["loss"]
    parts = [model.evaluate(dense, {}, half)["loss"] for half in halves]
    assert whole == pytest.approx((100 * parts[0] + 200 * parts[1]) / 300, rel=1e-5)


def test_batch_norm_calibration_argument_overrides_the_build_time_split(datasets):
    data = datasets["digits"]
    model = build_model("mlp", data.meta, batch_norm=True, hidden=[8])
    dense, _ = model.init(0)
    with pytest.raises(ValueError, match=r"Invalid calibration: None \(a batch_norm model recomputes BN statistics "
                                         r"from training data: pass build_model\(..., train=dataset.train\) or "
                                         r"evaluate\(..., calibration=dataset.train\)\)"):
        model.evaluate(dense, {}, data.test)
    assert model.evaluate(dense, {}, data.test, calibration=data.train)["accuracy"] >= 0


def test_batch_norm_loss_refuses_a_single_example(datasets):
    data = datasets["digits"]
    model = build_model("mlp", data.meta, batch_norm=True)
    with pytest.raises(ValueError, match=r"Invalid batch for batch_norm: '1 example' \(batch statistics need a "
                                         r"batch_size >= 2\)"):
        model.loss(model.init(0)[0], {}, data.train.subset([0]))


# -- sparse rows ----------------------------------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if c.data != "digits"], ids=lambda c: c.id)
def test_rows_are_exactly_what_the_batch_touches_and_only_they_get_gradient(case, datasets):
    model, data = make(case, datasets)
    batch = data.train.subset(torch.arange(20, 36))
    ids = model.rows(batch)
    touched = ({"weights": batch.indices} if case.name == "sparse_logreg"
               else {"users": batch.user, "items": batch.item})
    assert set(ids) == set(model.tables)
    for t in ids:
        assert ids[t].dtype == torch.int64
        assert ids[t].tolist() == sorted(set(touched[t].tolist()))

    dense, tables = model.init(0)
    full = {t: (v + 0.1).requires_grad_() for t, v in tables.items()}  # whole tables, the ordinary torch way
    model.loss(dense, {t: full[t][ids[t]] for t in ids}, batch).backward()
    _, _, row_grads = loss_and_grad(model, Layout(model.dense).flatten(dense),
                                    {t: (tables[t] + 0.1)[ids[t]] for t in ids}, batch)
    for t in ids:
        untouched = torch.ones(full[t].shape[0], dtype=torch.bool)
        untouched[ids[t]] = False
        assert (full[t].grad[untouched] == 0).all()
        assert torch.allclose(full[t].grad[ids[t]], row_grads[t])


def test_pulled_rows_of_the_wrong_length_are_refused(datasets):
    data = datasets["sparse"]
    model = build_model("sparse_logreg", data.meta)
    batch = data.train.subset(torch.arange(4))
    count = model.rows(batch)["weights"].numel()
    with pytest.raises(ValueError, match=rf"Invalid rows\['weights'\]: \({count - 1}, 1\) \(expected one row per id "
                                         rf"of model.rows\(batch\)\['weights'\]: {count} rows\)"):
        model.loss(model.init(0)[0], {"weights": torch.zeros(count - 1, 1)}, batch)


def test_sparse_logreg_beats_the_majority_class(datasets):
    data = datasets["sparse"]
    model = build_model("sparse_logreg", data.meta)
    dense, tables = train(model, data.train, optim.Adagrad(lr=0.5), steps=400, batch_size=16)
    majority = max(data.test.y.mean().item(), 1 - data.test.y.mean().item())
    assert model.evaluate(dense, tables, data.test)["accuracy"] > majority + 0.05


def test_hogwild_l2_sums_to_the_full_penalty_over_an_epoch(datasets):
    data = datasets["ratings"]
    plain = build_model("matrix_factorization", data.meta)
    model = build_model("matrix_factorization", data.meta, train=data.train, l2=0.5)
    dense, tables = model.init(0)
    ids = model.rows(data.train)
    rows = {t: tables[t][ids[t]] for t in ids}
    penalty = model.loss(dense, rows, data.train) - plain.loss(dense, rows, data.train)
    expected = 0.25 * sum(tables[t][ids[t]].square().sum() for t in ids)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


# -- refusals -----------------------------------------------------------------------

DIGITS_META = {"input_shape": (1, 8, 8), "num_classes": 10}
INVALID = [
    ("resnet", DIGITS_META, {}, r"Invalid model name: 'resnet' \(choose one of \['cnn', 'matrix_factorization', "
                                r"'mlp', 'softmax', 'sparse_logreg'\], or a plugin 'package.module:Name'\)"),
    ("mlp", DIGITS_META, {"hiden": [8]}, r"Invalid option for model 'mlp': 'hiden' \(allowed options: "
                                         r"\['batch_norm', 'dropout', 'hidden'\]\)"),
    ("mlp", DIGITS_META, {"hidden": []}, r"Invalid hidden: \[\] \(hidden must be a non-empty list of layer "
                                         r"widths, integers >= 1, e.g. \[64\]\)"),
    ("mlp", DIGITS_META, {"hidden": [8, 0]}, r"Invalid hidden: \[8, 0\]"),
    ("mlp", DIGITS_META, {"hidden": [8, True]}, r"Invalid hidden: \[8, True\]"),
    ("softmax", DIGITS_META, {"batch_norm": "yes"}, r"Invalid batch_norm: 'yes' \(batch_norm must be True or False\)"),
    ("cnn", {"num_features": 10}, {}, r"Invalid dataset meta for model 'cnn': \{'num_features': 10\} \(needs "
                                      r"'input_shape' and 'num_classes': use a dense data set such as 'digits'\)"),
    ("cnn", {"input_shape": (64,), "num_classes": 10}, {},
     r"Invalid input_shape for model 'cnn': \(64,\) \(the CNN needs images \(channels, height, width\) of at least "
     r"4x4\)"),
    ("softmax", DIGITS_META, {"train": [1, 2]},
     r"Invalid train: 'list' \(train must be the dense training split \(dataset.train\)\)"),
    ("softmax", [1, 8, 8], {}, r"Invalid dataset_meta: 'list' \(pass the data set's meta dict \(dataset.meta\)\)"),
    ("sparse_logreg", DIGITS_META, {}, r"Invalid dataset meta for model 'sparse_logreg': .* \(needs 'num_features': "
                                      r"use a sparse data set such as 'sparse_synthetic' or 'libsvm'\)"),
    ("sparse_logreg", {"num_features": 10}, {"l2": -1.0}, r"Invalid l2: -1.0 \(l2 must be a number >= 0\)"),
    ("sparse_logreg", {"num_features": 10}, {"l2": 0.1},
     r"Invalid train: 'NoneType' \(l2 > 0 scales each row's penalty by its training frequency \(Hogwild!\): "
     r"pass build_model\(..., train=dataset.train\)\)"),
    ("matrix_factorization", {"num_features": 10}, {},
     r"Invalid dataset meta for model 'matrix_factorization': .* \(needs 'num_users' and 'num_items'"),
    ("matrix_factorization", {"num_users": 3, "num_items": 4}, {"rank": 0},
     r"Invalid rank: 0 \(rank must be an integer >= 1\)"),
    ("matrix_factorization", {"num_users": 3, "num_items": 4}, {"l2": 1.0}, r"Invalid train: 'NoneType'"),
]


@pytest.mark.parametrize("name, meta, options, message", INVALID, ids=[f"{n}-{o}" for n, _, o, _ in INVALID])
def test_invalid_model_request_is_refused_with_the_fix(name, meta, options, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, meta, **options)


def test_every_model_has_refusal_rows():
    assert {name for name, _, _, _ in INVALID} >= set(MODELS)


@pytest.mark.parametrize("name", ["softmax", "mlp", "cnn"])
def test_dropout_drops_units_in_training_only(name):
    data = load_dataset("digits", seed=0)
    model = build_model(name, data.meta, dropout=0.5)
    plain = build_model(name, data.meta)
    dense, _ = model.init(0)
    batch = data.train.subset(torch.arange(64))
    assert model.stochastic and not plain.stochastic
    torch.manual_seed(1)
    first = model.loss(dense, {}, batch).item()
    torch.manual_seed(1)
    assert model.loss(dense, {}, batch).item() == first  # the masks come from torch's generator
    torch.manual_seed(2)
    assert model.loss(dense, {}, batch).item() != first
    assert first != plain.loss(dense, {}, batch).item()
    assert model.evaluate(dense, {}, data.test) == plain.evaluate(dense, {}, data.test)  # no dropout when scoring
