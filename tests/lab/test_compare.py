"""``asyncps compare`` past a failed run, over several seeds, and its progress bar: real runs on the
``sim`` backend, a fifth of an epoch on 2 workers, so that each takes about a second."""

import json
import statistics
import tomllib
from html.parser import HTMLParser

import pytest

from asyncps.lab.cli.main import main
from asyncps.lab.reports.compare import describe, plan

TINY = ["--backend", "sim", "--set", "train.epochs=0.2", "--set", "cluster.workers=2", "--set", "train.eval_every=2"]
DIVERGED = "ValueError: Invalid gradient for the model: 6360 non-finite values (NaN or Inf); nothing was applied"
REFUSED = ("ValueError: Invalid config [server]: Invalid learning rate: -1 (lr must be a finite number >= 0 or a "
           "schedule step -> lr)")


class Tables(HTMLParser):
    """Each table's body rows (a cell's text whole) by the table's class, the text of the failures' list items,
    and the figure captions."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.failures: list[str] = []
        self.captions: list[str] = []
        self._table = self._cell = self._item = self._caption = None
        self._in_body = self._in_failures = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._table.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "div" and attrs.get("class") == "failures":
            self._in_failures = True
        elif tag == "li" and self._in_failures:
            self._item = []
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "div":
            self._in_failures = False
        elif tag == "li" and self._item is not None:
            self.failures.append("".join(self._item))
            self._item = None
        elif tag == "figcaption":
            self.captions.append("".join(self._caption))
            self._caption = None

    def handle_data(self, data):
        for part in (self._cell, self._item, self._caption):
            if part is not None:
                part.append(data)


# -- a run that fails ----------------------------------------------------------------
def test_a_failed_run_is_marked_in_the_report_and_the_others_still_run(tmp_path, capsys, recwarn):
    """lr = 1e30 diverges (its gradients overflow), lr = -1 fails before it starts, lr = 0.1 runs."""
    out = tmp_path / "lr"
    names = [f"quickstart-server.options.lr={lr}" for lr in ("1e30", "-1", "0.1")]
    assert main(["compare", "--sweep", "server.options.lr=1e30,-1,0.1", *TINY, "--out", str(out)]) == 1
    printed, err = capsys.readouterr()
    assert printed.splitlines() == [f"[1/3] {names[0]}: failed: {DIVERGED}", f"[2/3] {names[1]}: failed: {REFUSED}",
                                    f"[3/3] {describe(out / names[2])}", f"report: {out / 'report.html'}"]
    assert err.splitlines()[-3:] == ["asyncps compare: error: 2 of 3 runs failed; the report marks them:",
                                     f"  {names[0]}: {DIVERGED}", f"  {names[1]}: {REFUSED}"]
    assert "compare: 100%|██████████| 3/3 [" in err and ", failed=2]" in err  # the whole comparison's progress

    assert json.loads((out / names[0] / "summary.json").read_text())["failed"] == DIVERGED
    assert list((out / names[1]).iterdir()) == []  # it failed before it recorded anything
    page = Tables((out / "report.html").read_text())
    assert page.failures == [f"{names[0]} (server.options.lr = 1e+30): {DIVERGED}",
                             f"{names[1]} (server.options.lr = -1): {REFUSED}"]
    rows = page.tables["runs"]
    assert [row[0] for row in rows] == [f"{names[0]} failed", f"{names[1]} failed", names[2]]
    good = json.loads((out / names[2] / "summary.json").read_text())
    assert good["failed"] is None and good["updates"] > 0
    assert rows[2][1:5] == ["server.options.lr = 0.1", f"{good['final']['test_loss']:.4g}",
                            f"{100 * good['final']['test_accuracy']:.2f}%", "not reached"]
    assert rows[1][2:] == ["—", "—", "not reached", "—", "—", "—", "—", "—"]  # nothing recorded
    assert "Failed runs are left out." in page.captions[0]  # the sweep's figure: lr is a number
    # The failure's long event label is cut to fit its run's panels, which keep their layout.
    assert [str(w.message) for w in recwarn if "constrained_layout" in str(w.message)] == []


# -- several seeds ---------------------------------------------------------------------
def test_seeds_run_each_configuration_on_consecutive_seeds_and_the_report_gives_mean_and_spread(tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["compare", "--sweep", "protocol.name=downpour,sync", "--seeds", "3", *TINY, "--out", str(out),
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    configurations = ["quickstart-protocol.name=downpour", "quickstart-protocol.name=sync"]
    runs = {name: [out / f"{name}-seed={seed}" for seed in range(3)] for name in configurations}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.name for d in runs.values() for p in d)
    for name, dirs in runs.items():
        configs = [tomllib.loads((d / "config.toml").read_text()) for d in dirs]
        assert [c["seed"] for c in configs] == [0, 1, 2]
        assert {c["protocol"]["name"] for c in configs} == {name.rpartition("=")[2]}

    text = (out / "report.html").read_text()
    assert "<title>2 configurations compared (6 runs): protocol.name</title>" in text
    page = Tables(text)
    table = page.tables["runs configurations"]
    assert [row[:4] for row in table] == [[name, f"protocol.name = {name.rpartition('=')[2]}", "0, 1, 2", "3"]
                                          for name in configurations]
    for row, dirs in zip(table, runs.values()):
        summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
        losses = [s["final"]["test_loss"] for s in summaries]
        accuracies = [100 * s["final"]["test_accuracy"] for s in summaries]
        staleness = [s["staleness"]["mean"] for s in summaries]
        rates = [s["updates_per_second"] for s in summaries]
        assert row[4] == f"{statistics.mean(losses):.4g} ± {statistics.stdev(losses):.4g}"
        assert row[5] == f"{statistics.mean(accuracies):.2f}% ± {statistics.stdev(accuracies):.2f}%"
        assert row[7] == f"{statistics.mean(staleness):.3g} ± {statistics.stdev(staleness):.3g}"
        assert row[10] == f"{statistics.mean(rates):.3g} ± {statistics.stdev(rates):.3g}"
    assert len(page.tables["runs"]) == 6
    assert page.captions[2].startswith("How stale the pushes were: each configuration's distribution over "
                                      "all its seeds' pushes")


@pytest.mark.parametrize("value, message", [
    ("0", "argument --seeds: expected a whole number >= 1, got 0"),
    ("-1", "argument --seeds: expected a whole number >= 1, got -1"),
    ("x", "argument --seeds: expected a whole number >= 1, got 'x'"),
])
def test_a_bad_seeds_value_is_one_usage_error(value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--sweep", "protocol.name=downpour,sync", "--seeds", value, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"asyncps compare: error: {message}"
    assert not (tmp_path / "out").exists()


def test_seeds_start_at_each_configs_own_seed(tmp_path):
    configs = plan([], [("protocol.name", ["downpour", "sync"])], ["seed=10"], "sim", tmp_path, seeds=2)
    assert [(c.name, c.seed) for c in configs] == [
        ("quickstart-protocol.name=downpour-seed=10", 10), ("quickstart-protocol.name=downpour-seed=11", 11),
        ("quickstart-protocol.name=sync-seed=10", 10), ("quickstart-protocol.name=sync-seed=11", 11)]
    alone = plan([], [], [], None, tmp_path, seeds=2)  # one configuration over two seeds is a comparison too
    assert [(c.name, c.seed) for c in alone] == [("quickstart-seed=0", 0), ("quickstart-seed=1", 1)]


def test_seeds_and_a_sweep_of_the_seed_are_refused_together(tmp_path, capsys):
    assert main(["compare", "--sweep", "seed=1,2", "--seeds", "2", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("asyncps compare: error: --seeds 2 and --sweep seed both choose the seeds; "
                                       "give one of them\n")
    assert not (tmp_path / "out").exists()
