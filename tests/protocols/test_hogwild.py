"""Hogwild!: one worker is sequential per-example SGD (a numpy oracle written
here), the penalty touches only an example's own coordinates, two threads and
two processes reach the one-thread test error, locks rule out collisions,
matrix factorization converges, and every refusal says what to fix.
No timing is asserted: speed is benchmarks/hogwild_bench.py's business."""

from __future__ import annotations

import numpy as np
import pytest

from asyncps.protocols import hogwild
from asyncps.protocols.hogwild import kernels
from asyncps.protocols.hogwild import (MatrixCompletion, Ratings, SparseClassification, SparseExamples, epoch_orders,
                               initial_params, train)


# -- small planted problems ------------------------------------------------------------
def sparse_examples(rng, n, num_features, w_true, nnz=(1, 8), binary=False) -> SparseExamples:
    """``n`` examples of ``nnz`` distinct features each, labelled by the planted separator ``w_true``."""
    rows = [np.sort(rng.choice(num_features, rng.integers(*nnz, endpoint=True), replace=False)) for _ in range(n)]
    offsets = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    indices = np.concatenate(rows)
    values = np.ones(indices.size) if binary else rng.uniform(0.5, 1.5, indices.size)
    margins = np.add.reduceat(w_true[indices] * values, offsets[:-1])
    return SparseExamples(indices, offsets, values, (margins > 0).astype(np.float32))


def classification(n=3_000, num_features=400, loss="logistic", seed=0, nnz=(1, 8)) -> SparseClassification:
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(num_features)
    return SparseClassification(sparse_examples(rng, n, num_features, w_true, nnz),
                                sparse_examples(rng, 1_000, num_features, w_true, nnz), num_features, loss)


def completion(num_users=120, num_items=100, rank=3, observed=0.3, noise=0.05, seed=0) -> MatrixCompletion:
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, rank ** -0.25, (num_users, rank)), rng.normal(0, rank ** -0.25, (num_items, rank))
    entries = rng.choice(num_users * num_items, round(observed * num_users * num_items), replace=False)
    user, item = entries // num_items, entries % num_items
    rating = (users[user] * items[item]).sum(1) + noise * rng.standard_normal(entries.size)
    cut = entries.size * 4 // 5
    return MatrixCompletion(Ratings(user[:cut], item[:cut], rating[:cut]),
                            Ratings(user[cut:], item[cut:], rating[cut:]), num_users, num_items, rank)


@pytest.fixture(scope="module")
def problem():
    return classification()


# -- the oracle: plain sequential per-example SGD, in numpy -----------------------------
def sequential_sgd(problem, epochs, step_size, beta, l2, seed) -> dict[str, np.ndarray]:
    """Algorithm 1 with one processor, from the docstring's rule, in float32 like the kernels."""
    f32 = np.float32
    params = initial_params(problem, seed)
    train_set = problem.train
    n = len(train_set)
    orders = epoch_orders(n, seed)
    if isinstance(problem, SparseClassification):
        w = params["w"]
        degree = np.maximum(np.bincount(train_set.indices, minlength=problem.num_features), 1)
        reg = (l2 * n / degree).astype(f32)
        for epoch in range(epochs):
            step = f32(step_size * beta ** epoch)
            for i in next(orders):
                ids = train_set.indices[train_set.offsets[i]:train_set.offsets[i + 1]]
                a = train_set.values[train_set.offsets[i]:train_set.offsets[i + 1]]
                read = w[ids].copy()
                z = f32(0)
                for x, v in zip(read, a):  # in order, not numpy's pairwise sum
                    z = f32(z + x * v)
                if problem.loss == "logistic":
                    g = f32(f32(1) / (f32(1) + np.exp(-z)) - train_set.labels[i])
                else:
                    sign = f32(2) * train_set.labels[i] - f32(1)
                    g = -sign if sign * z < 1 else f32(0)
                w[ids] = w[ids] - step * (g * a + reg[ids] * read)
        return params
    users, items = params["users"], params["items"]
    user_reg = (l2 * n / np.maximum(np.bincount(train_set.user, minlength=problem.num_users), 1)).astype(f32)
    item_reg = (l2 * n / np.maximum(np.bincount(train_set.item, minlength=problem.num_items), 1)).astype(f32)
    for epoch in range(epochs):
        step = f32(step_size * beta ** epoch)
        for i in next(orders):
            u, v = train_set.user[i], train_set.item[i]
            p, q = users[u].copy(), items[v].copy()
            prediction = f32(0)
            for a, b in zip(p, q):
                prediction = f32(prediction + a * b)
            g = f32(2) * (prediction - train_set.rating[i])
            users[u] = users[u] - step * (g * q + user_reg[u] * p)
            items[v] = items[v] - step * (g * p + item_reg[v] * q)
    return params


@pytest.mark.parametrize("kind, l2", [("logistic", 0.0), ("logistic", 1e-3), ("hinge", 1e-3), ("ratings", 1e-3)])
def test_one_thread_is_sequential_sgd(kind, l2):
    problem = completion(40, 30, observed=0.5) if kind == "ratings" else classification(600, 150, loss=kind)
    settings = {"epochs": 3, "step_size": 0.05 if kind == "ratings" else 0.3, "beta": 0.7, "l2": l2, "seed": 4}

    result = train(problem, threads=1, chunk=7, **settings)

    expected = sequential_sgd(problem, **settings)
    assert result.params.keys() == expected.keys()
    for name, values in expected.items():
        np.testing.assert_allclose(result.params[name], values, rtol=0, atol=1e-6, err_msg=name)
    assert result.collisions == 0 and result.updates == 3 * len(problem.train)
    steps = [r["step_size"] for r in result.history]
    assert steps == pytest.approx([settings["step_size"] * 0.7 ** k for k in range(3)])


# -- the penalty lives on the example's support --------------------------------------------
def test_sparse_penalty_touches_only_the_example_support():
    num_features = 50
    w = np.linspace(-1, 1, num_features).astype(np.float32)
    before = w.copy()
    support = np.array([3, 17, 40])
    reg = np.full(num_features, 0.5, dtype=np.float32)  # a strong penalty on every feature
    stamps, locks = np.zeros(num_features, np.int32), np.zeros(num_features, np.int32)

    cursor, order = np.zeros(1, np.int64), np.zeros(1, np.int64)  # one example, example 0
    kernels.sparse_epoch(w, reg, stamps, locks, cursor, order, 1, support.astype(np.int32), np.array([0, 3]),
                         np.ones(3, np.float32), np.ones(1, np.float32), 3, np.float32(0.1), kernels.LOGISTIC, 0, 1,
                         False)

    untouched = np.setdiff1d(np.arange(num_features), support)
    np.testing.assert_array_equal(w[untouched], before[untouched])
    assert np.all(w[support] != before[support])
    assert np.all(stamps[untouched] == 0) and np.all(stamps[support] == 1)


def test_matrix_factorization_penalty_leaves_unrated_rows_alone():
    """Users 10.. and items 8.. have no training rating: with a penalty, their rows keep their initial values."""
    problem = completion(40, 30, observed=0.5)
    rated = problem.train.user < 10
    rated &= problem.train.item < 8
    train_set = problem.train
    problem = MatrixCompletion(Ratings(train_set.user[rated], train_set.item[rated], train_set.rating[rated]),
                               problem.test, 40, 30, 3)
    start = initial_params(problem, seed=2)

    result = train(problem, threads=2, epochs=3, step_size=0.05, l2=0.1, seed=2)

    np.testing.assert_array_equal(result.params["users"][10:], start["users"][10:])
    np.testing.assert_array_equal(result.params["items"][8:], start["items"][8:])
    for table, ids in (("users", problem.train.user), ("items", problem.train.item)):
        assert np.all(result.params[table][np.unique(ids)] != start[table][np.unique(ids)])


# -- parallel workers --------------------------------------------------------------------
@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_two_workers_reach_the_one_worker_test_error(problem, processes):
    settings = {"epochs": 8, "step_size": 0.5, "l2": 1e-4, "seed": 1, "chunk": 16}
    one = train(problem, threads=1, **settings)
    two = train(problem, threads=2, processes=processes, **settings)

    assert one.final["test_error"] < 0.2  # it learned something: half the labels are 1
    assert two.final["test_error"] == pytest.approx(one.final["test_error"], abs=0.02)
    assert two.updates == one.updates == 8 * len(problem.train)
    assert two.threads == 2 and two.processes is processes and two.mode == "lockfree"
    assert 0 <= two.collisions <= two.updates and two.collision_rate == two.collisions / two.updates


def hot_problem() -> SparseClassification:
    """Eight features, six per example: two workers write the same coordinates all the time."""
    return classification(n=20_000, num_features=8, nnz=(6, 6), seed=3)


def test_lock_free_workers_on_a_hot_problem_do_collide():
    """With 8 features and 6 per example, two overlapping updates almost surely share a
    coordinate. It takes the two threads running at once, though: on a busy machine the
    second one may wake up after a short epoch is over, so the run is tried a few times."""
    for _ in range(5):
        result = train(hot_problem(), threads=2, epochs=10, step_size=0.05, chunk=16)
        if result.collisions:
            break
    assert result.collisions > 0
    assert sum(r["collisions"] for r in result.history) == result.collisions


def test_locked_workers_never_collide():
    result = train(hot_problem(), threads=2, mode="locked", epochs=10, step_size=0.05, chunk=16)
    assert result.collisions == 0 and result.collision_rate == 0.0
    assert result.updates == 10 * 20_000
    assert result.final["test_error"] < 0.2


def test_matrix_factorization_converges():
    problem = completion()
    result = train(problem, threads=2, epochs=40, step_size=0.05, beta=0.95, l2=1e-4, seed=0)

    first, last = result.history[0], result.final
    # Ratings have unit variance and noise 0.05: predicting 0 scores an RMSE of about 1.
    assert first["test_rmse"] > 0.5
    assert last["train_rmse"] < 0.2 and last["test_rmse"] < 0.35
    assert last["test_rmse"] < first["test_rmse"] / 3


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"threads": 0}, "Invalid threads: 0 (threads must be an integer >= 1)"),
    ({"threads": 1.5}, "Invalid threads: 1.5 (threads must be an integer >= 1)"),
    ({"mode": "wild"}, "Invalid mode: 'wild' (choose one of ['lockfree', 'locked'])"),
    ({"processes": "yes"}, "Invalid processes: 'yes' (processes must be True or False)"),
    ({"epochs": 0}, "Invalid epochs: 0 (epochs must be an integer >= 1)"),
    ({"step_size": -1.0}, "Invalid step_size: -1.0 (step_size must be a number > 0)"),
    ({"step_size": float("nan")}, "Invalid step_size: nan (step_size must be a number > 0)"),
    ({"beta": 0.0}, "Invalid beta: 0.0 (beta (the step decay per epoch) must be in (0, 1])"),
    ({"beta": 1.5}, "Invalid beta: 1.5"),
    ({"l2": -0.1}, "Invalid l2: -0.1 (l2 must be a number >= 0)"),
    ({"seed": -1}, "Invalid seed: -1 (seed must be an integer >= 0)"),
    ({"chunk": 0}, "Invalid chunk: 0 (chunk must be an integer >= 1)"),
])
def test_bad_settings_are_refused(problem, options, message):
    with pytest.raises(ValueError) as error:
        train(problem, **options)
    assert message in str(error.value)


def test_a_problem_of_another_type_is_refused():
    with pytest.raises(ValueError, match="Invalid problem: 'dict' .pass a hogwild.SparseClassification"):
        train({"w": np.zeros(3)})


@pytest.mark.parametrize("make, message", [
    (lambda: SparseExamples([2, 1], [0, 2], [1, 1], [1]), "Invalid indices: 'unsorted or repeated'"),
    (lambda: SparseExamples([1, 1], [0, 2], [1, 1], [1]), "feature ids must be sorted and distinct"),
    (lambda: SparseExamples([1, 2], [0, 1], [1, 1], [1]), "offsets[-1] must equal the number of indices"),
    (lambda: SparseExamples([1, 2], [1, 2], [1, 1], [1]), "CSR row pointers"),
    (lambda: SparseExamples([1, 2], [0, 2], [1, 1], [1, 0]), "Invalid labels: 2 (one label per example: 1)"),
    (lambda: SparseExamples([1, 2], [0, 2], [1, 1], [2]), "labels must be 0/1 or -1/+1"),
    (lambda: SparseExamples([1, 2], [0, 2], [1, np.inf], [1]), "feature values must be finite"),
    (lambda: SparseClassification(SparseExamples([1, 9], [0, 2], [1, 1], [1]), SparseExamples([], [0], [], []), 5),
     "Invalid indices: (1, 9) (indices must be in [0, num_features=5))"),
    (lambda: SparseClassification(SparseExamples([1], [0, 1], [1], [1]), SparseExamples([], [0], [], []), 5,
                                  loss="square"), "Invalid loss: 'square' (choose one of ['hinge', 'logistic'])"),
    (lambda: SparseClassification(SparseExamples([], [0], [], []), SparseExamples([], [0], [], []), 5),
     "at least one training example"),
    (lambda: Ratings([0, 1], [0], [1.0, 2.0]), "one user and one item per rating"),
    (lambda: MatrixCompletion(Ratings([0, 7], [0, 1], [1.0, 2.0]), Ratings([], [], []), 5, 5),
     "Invalid user: (0, 7) (user must be in [0, num_users=5))"),
    (lambda: MatrixCompletion(Ratings([0], [0], [1.0]), Ratings([], [], []), 5, 5, rank=0),
     "Invalid rank: 0 (rank must be an integer >= 1)"),
])
def test_malformed_problems_are_refused(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_minus_one_labels_mean_zero():
    examples = SparseExamples([0, 1], [0, 1, 2], [1, 1], [-1, 1])
    np.testing.assert_array_equal(examples.labels, [0, 1])
    assert examples.width == 1 and len(examples) == 2


def test_public_names():
    assert set(hogwild.__all__) >= {"train", "Result", "SparseClassification", "MatrixCompletion"}
