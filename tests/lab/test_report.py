"""``asyncps compare`` and ``asyncps report``: the runs, the page, and the page in headless Chromium.

One small comparison (the quickstart for one epoch, Downpour against sync) is
run once for the module; the page tests read it, and the report tests copy its
run directories so they never change what the others read.
"""

import base64
import io
import json
import math
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from asyncps.lab.cli.main import main
from asyncps.lab.reports.compare import parse_sweep, plan

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"
CHROMIUM = Path("/usr/bin/chromium")
RUNS = ["quickstart-protocol.name=downpour", "quickstart-protocol.name=sync"]
PER_RUN_PICTURES = 5  # accuracy, loss, staleness, progress, staleness_breakdown
OVERLAYS = 3          # compare_quality, compare_loss, compare_staleness


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "downpour-vs-sync"
    assert main(["compare", str(QUICKSTART), "--sweep", "protocol.name=downpour,sync", "--set", "train.epochs=1",
                 "--set", "train.eval_every=5", "--out", str(out), "--no-progress"]) == 0
    return out


class Page(HTMLParser):
    """What the tests look for in a page: the results table's body rows, the images, the text."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.images, self.text, self.title = [], [], [], None
        self._in_runs_body = self._in_title = False
        self._table_classes = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table_classes.append(attrs.get("class", ""))
        elif tag == "tbody" and self._table_classes and self._table_classes[-1] == "runs":
            self._in_runs_body = True
        elif tag == "tr" and self._in_runs_body:
            self.rows.append([])
        elif tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "table" and self._table_classes:
            self._table_classes.pop()
        elif tag == "tbody":
            self._in_runs_body = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_runs_body and self.rows:
            self.rows[-1].append(data)
        if self._in_title:
            self.title = data
        self.text.append(data)


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    assert image.format == "PNG" and image.size[0] >= 600
    return image


def require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"headless Chromium is required for this test and {CHROMIUM} is missing: install it with "
                    "`apt-get update && apt-get install -y chromium` (Debian's chromium package)")
    return CHROMIUM


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [str(require_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# -- compare -----------------------------------------------------------------------
def test_compare_runs_each_value_on_the_same_seed_in_its_own_directory(compared):
    assert sorted(p.name for p in compared.iterdir() if p.is_dir()) == RUNS
    configs = [tomllib.loads((compared / name / "config.toml").read_text()) for name in RUNS]
    assert [c["protocol"]["name"] for c in configs] == ["downpour", "sync"]
    assert [c["name"] for c in configs] == RUNS and {c["out_dir"] for c in configs} == {str(compared)}
    for config in configs:
        assert config["seed"] == 0 and config["train"]["epochs"] == 1 and config["train"]["eval_every"] == 5
        del config["name"], config["protocol"]["name"]
    assert configs[0] == configs[1]  # nothing else differs
    for name in RUNS:
        assert json.loads((compared / name / "summary.json").read_text())["updates"] > 0


def test_the_page_has_one_row_per_run_the_differences_and_every_picture_embedded(compared):
    text = (compared / "report.html").read_text()
    page = Page(text)
    assert page.title == "2 runs compared: protocol.name"
    assert [row[0].strip() for row in page.rows] == RUNS
    assert ["protocol.name = downpour", "protocol.name = sync"] == [row[1] for row in page.rows]
    body = " ".join(page.text)
    for header in ("test loss", "test accuracy", "time to 95% (s)", "mean staleness", "p95 staleness",
                   "updates / s", "run time (s)", "The runs differ in"):
        assert header in body
    assert len(page.images) == OVERLAYS + PER_RUN_PICTURES * len(RUNS)
    for src in page.images:
        decode_png(src).verify()
    assert "<script" not in text.lower()  # no JavaScript, no external resources
    assert 'src="http' not in text and "href=\"http" not in text
    for name in ("compare_quality.png", "compare_loss.png", "compare_staleness.png"):
        assert (compared / name).is_file()
    for run in RUNS:
        for name in ("accuracy.png", "loss.png", "staleness.png", "progress.png", "staleness_breakdown.png"):
            assert (compared / run / name).is_file()


def test_a_numeric_sweep_gets_its_final_results_drawn_against_the_swept_value(tmp_path):
    out = tmp_path / "sweep"
    assert main(["compare", "--sweep", "protocol.name=downpour,sync", "--sweep", "cluster.workers=1,2,3", "--backend",
                 "sim", "--set", "train.epochs=0.5", "--out", str(out), "--no-progress"]) == 0
    page = Page((out / "report.html").read_text())
    assert len(page.images) == OVERLAYS + 1 + PER_RUN_PICTURES * 6
    decode_png(page.images[0]).verify()  # the sweep's figure comes first
    assert (out / "compare_sweep.png").is_file()
    assert "final test loss and accuracy, against the swept cluster.workers" in " ".join(page.text)


def test_the_page_renders_in_headless_chromium(compared, tmp_path):
    url = (compared / "report.html").resolve().as_uri()
    dumped = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Page(dumped.stdout)
    assert [row[0].strip() for row in dom.rows] == RUNS
    assert len(dom.images) == OVERLAYS + PER_RUN_PICTURES * len(RUNS)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in dom.images)

    shot = tmp_path / "shot.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1400,3000", url, profile=tmp_path / "profile")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (1400, 3000)
        assert image.convert("L").getextrema()[0] < 100  # text and plots, not a blank page


# -- report ------------------------------------------------------------------------
def test_report_of_one_run_writes_its_plots_and_page_into_the_run_directory(compared, tmp_path, capsys):
    run_dir = shutil.copytree(compared / RUNS[1], tmp_path / "sync")
    for name in ("progress.png", "staleness_breakdown.png", "accuracy.png"):
        (run_dir / name).unlink()
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'report.html'}"
    page = Page((run_dir / "report.html").read_text())
    assert len(page.rows) == 1 and len(page.images) == PER_RUN_PICTURES
    assert "Side by side" not in " ".join(page.text)
    for name in ("progress.png", "staleness_breakdown.png", "accuracy.png"):
        with Image.open(run_dir / name) as image:
            image.verify()


def synthetic_run(run_dir: Path, name: str, workers: int, regression: bool) -> Path:
    """A small run written by hand: ``workers`` workers, worker 0 three times slower, 2 shards."""
    records, updates = [], 0
    for step in range(1, 21):
        for worker in range(workers):
            time = step * 0.01 * (3 if worker == 0 else 1) + worker * 1e-4
            records.append({"time": time, "kind": "train", "worker": worker, "step": step, "loss": 2 / step})
            for shard in range(2):
                records.append({"time": time, "kind": "push", "worker": worker, "shard": shard, "version": updates,
                                "staleness": (step + worker) % (workers + 1), "applied": True})
            updates += 1
        quality = {"test_rmse": 1 / math.sqrt(step)} if regression else {"test_accuracy": 1 - 0.5 / step}
        records.append({"time": step * 0.03 + 0.005, "kind": "eval", "updates": updates, "test_loss": 1 / step,
                        "val_loss": 1 / step, **quality})
    records.append({"time": 0.2, "kind": "event", "message": "early <stopping>"})
    records.sort(key=lambda r: r["time"])
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "config.toml").write_text(f'name = {json.dumps(name)}\nseed = {workers}\n[cluster]\n'
                                         f"workers = {workers}\n")
    return run_dir


def test_hand_written_runs_names_are_escaped_and_many_workers_and_rmse_still_report(tmp_path, monkeypatch):
    """No summary.json (computed from the metrics), a hostile name, 12 workers (heat maps), a regression run;
    several runs' report goes to runs/report by default."""
    hostile = '<script>alert("x")</script> & co'
    runs = [synthetic_run(tmp_path / "a", hostile, 12, regression=False),
            synthetic_run(tmp_path / "b", "mf", 3, regression=True)]
    monkeypatch.chdir(tmp_path)
    assert main(["report", *map(str, runs)]) == 0
    text = (tmp_path / "runs" / "report" / "report.html").read_text()
    assert "<script" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert "early &lt;stopping&gt;" in text
    page = Page(text)
    assert [row[0].strip() for row in page.rows] == [hostile, "mf"]
    body = " ".join(page.text)
    assert "test RMSE" in body and "The runs do not share a seed" in body and "cluster.workers" in body
    assert len(page.images) == OVERLAYS + PER_RUN_PICTURES * 2
    for src in page.images:
        decode_png(src).verify()


def test_the_page_counts_each_shards_pushes_and_those_a_restore_lost(tmp_path):
    pushes = [{"kind": "push", "time": 0.1 * i, "worker": 0, "shard": i % 2, "staleness": 0, "applied": True}
              for i in range(10)]
    final = {"kind": "final", "time": 1.0, "shard_versions": [5, 3]}  # shard 1 came back from a checkpoint at 3
    run_dir = tmp_path / "restored"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*pushes, final]))
    assert main(["report", str(run_dir)]) == 0
    text = " ".join(Page((run_dir / "report.html").read_text()).text)
    assert "pushes per shard, acknowledged / applied / lost to a restore: shard 0: 5 / 5 / 0; shard 1: 5 / 5 / 2" \
        in text


def test_runs_with_few_or_odd_records_still_report(tmp_path):
    """An empty run and one whose records lack fields: every picture says what is missing, nothing crashes."""
    odd = [{"kind": "eval", "time": 1.0, "updates": 3, "val_loss": 1.0}, {"kind": "push", "time": 0.5, "staleness": 3},
           {"kind": "train"}, {"kind": "train", "time": 0.0, "worker": 0, "step": 1, "loss": 2.0}]
    runs = [tmp_path / "empty", tmp_path / "odd"]
    for run_dir, records in zip(runs, ([], odd)):
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    page = Page((tmp_path / "out" / "report.html").read_text())
    assert [row[0].strip() for row in page.rows] == ["empty", "odd"]
    assert len(page.images) == OVERLAYS + PER_RUN_PICTURES * 2


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "Invalid run directory" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


# -- compare's command line --------------------------------------------------------
@pytest.mark.parametrize("sweep, message", [
    ("protocol.name", "expected KEY=V1,V2,..., e.g. --sweep protocol.name=downpour,sync"),
    ("=downpour,sync", "expected KEY=V1,V2,..."),
    ("protocol..name=a,b", "expected KEY=V1,V2,..."),
    ("protocol.name=", "expected one or more comma-separated values after 'protocol.name='"),
    ("protocol.name=downpour,,sync", "expected one or more comma-separated values"),
    ("name=a,b", "compare sets name for every run itself; sweep another key"),
    ("seed+out_dir=a,b", "compare sets out_dir for every run itself; sweep another key"),
    ("seed+=1,2", "expected KEY=V1,V2,..."),
])
def test_bad_sweep_syntax_is_a_usage_error_showing_the_expected_form(sweep, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--sweep", sweep, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: asyncps compare" in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "protocol.name=downpour,nope"], "Invalid config value protocol.name = 'nope' (choose one of:"),
    (["--sweep", "protocol.name=downpour,sync", "--sweep", "protocol.name=sync"],
     "--sweep protocol.name is given twice"),
    ([str(QUICKSTART)], "nothing to compare: give two or more CONFIG files, a --sweep with two or more values "
                        "(KEY=V1,V2,..., e.g. --sweep protocol.name=downpour,sync), or --seeds 2 or more\n"),
    (["--sweep", "cluster.workers=2,4", "--set", "cluster.nodes=3"], "Invalid config key 'cluster.nodes'"),
])
def test_a_bad_comparison_is_refused_before_anything_runs(argv, message, tmp_path, capsys):
    assert main(["compare", *argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweeps_make_the_cross_product_after_the_shared_overrides(tmp_path):
    configs = plan([], [parse_sweep("protocol.name=downpour,sync"), parse_sweep("cluster.workers=2, 8")],
                   ["cluster.workers=3", "train.epochs=2"], "sim", tmp_path)
    assert [(c.protocol.name, c.cluster.workers) for c in configs] == [
        ("downpour", 2), ("downpour", 8), ("sync", 2), ("sync", 8)]
    assert configs[1].name == "quickstart-protocol.name=downpour-cluster.workers=8"
    assert {(c.seed, c.backend, c.train.epochs, c.out_dir) for c in configs} == {(0, "sim", 2, str(tmp_path))}


def test_a_joint_sweep_sets_its_keys_together(tmp_path):
    key, values = parse_sweep("protocol.options.n_fetch+protocol.options.n_push=1,4")
    configs = plan([], [(key, values)], [], None, tmp_path)
    assert [c.protocol.options for c in configs] == [{"n_fetch": 1, "n_push": 1}, {"n_fetch": 4, "n_push": 4}]
    assert configs[1].name == "quickstart-protocol.options.n_fetch+protocol.options.n_push=4"


def test_sweep_values_keep_their_brackets_and_names_stay_directory_names(tmp_path):
    key, values = parse_sweep('model.options.hidden=[64], [64, 32],"a,b"')
    assert (key, values) == ("model.options.hidden", ["[64]", "[64, 32]", '"a,b"'])
    configs = plan([], [(key, values[:2])], [], None, tmp_path)
    assert [c.model.options["hidden"] for c in configs] == [[64], [64, 32]]
    assert [c.name for c in configs] == ["quickstart-model.options.hidden=_64_",
                                         "quickstart-model.options.hidden=_64,_32_"]


def test_configs_with_the_same_name_get_their_file_names(tmp_path):
    for stem, lr in (("adagrad", 0.1), ("slow", 0.01)):
        (tmp_path / f"{stem}.toml").write_text(f'name = "quickstart"\n[server]\noptions = {{lr = {lr}}}\n')
    configs = plan([tmp_path / "adagrad.toml", tmp_path / "slow.toml"], [], [], None, tmp_path / "out")
    assert [c.name for c in configs] == ["quickstart-adagrad", "quickstart-slow"]
    assert [c.server.options["lr"] for c in configs] == [0.1, 0.01]
    assert {c.run_dir.parent for c in configs} == {tmp_path / "out"}
