"""``asyncps config`` (``lab.schema``): every key of the config with its default, what is allowed and its
meaning, none undocumented; and ``asyncps --version``."""

import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import ClassVar

import pytest

import asyncps.lab.cli.info
from asyncps.lab.cli.main import main
from asyncps.lab.config import Config, HogwildExperiment
from asyncps.lab.schema import OPEN_TABLES, meanings, schema, undocumented

ROOTS = {"asyncps run": (Config, []), "asyncps hogwild": (HogwildExperiment, ["--hogwild"])}


def every_key(root: type) -> dict[str, object]:
    """Dotted key -> default, straight from the dataclasses: the top-level keys and each section's."""
    keys = {}
    for top in fields(root):
        section = top.default_factory
        for f, prefix in [(f, f"{top.name}.") for f in fields(section)] if is_dataclass(section) else [(top, "")]:
            keys[prefix + f.name] = f.default_factory() if f.default is MISSING else f.default
    return keys


@pytest.mark.parametrize("command", ROOTS)
def test_every_key_is_printed_with_its_default_and_a_meaning(command, capsys):
    root, flags = ROOTS[command]
    assert main(["config", *flags]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"The config of {command}: every key, its default")
    defaults = {line.strip().split(" = ", 1)[0]: line.strip().split(" = ", 1)[1]
                for line in printed if line.startswith("  ") and not line.startswith("   ")}
    expected = every_key(root)
    assert list(defaults) == list(expected)  # each key once, in the dataclasses' order; no ClassVar
    assert {key: tomllib.loads(f"v = {text}")["v"] for key, text in defaults.items()} == expected
    for key in expected:  # the lines under a key: its meaning first, then what is allowed (unless it said so)
        under = printed[printed.index(f"  {key} = {defaults[key]}") + 1]
        assert under.startswith("      ") and under.strip()


@pytest.mark.parametrize("root", [Config, HogwildExperiment])
def test_no_key_is_undocumented(root):
    """A new field needs a ``#`` comment beside it saying what it means: that comment is the schema's line."""
    assert undocumented(root) == []


@dataclass(frozen=True)
class Extra:
    """[extra]: a section with a key that has no comment."""

    section: ClassVar[str] = "extra"  # not a key
    said: int = 1                # a key with its meaning, which
                                 # runs on to a second line
    unsaid: int = 2
    after: dict = field(default_factory=dict)  # the next one


@dataclass(frozen=True)
class WithExtra:
    seed: int = 0                # the seed
    extra: Extra = field(default_factory=Extra)


def test_a_key_without_a_comment_is_found():
    assert meanings(Extra) == {"section": "not a key", "said": "a key with its meaning, which runs on to a second line",
                               "unsaid": "", "after": "the next one"}
    assert undocumented(WithExtra) == ["extra.unsaid"]
    assert [key.allowed for _, keys in schema(WithExtra) for key in keys] == [f"a value of type {t}" for t in ("int", "int", "int", "dict")]


def test_what_is_allowed_is_the_configs_own_rule_and_open_tables_say_where_their_keys_are():
    keys = {key.key: key for _, keys in schema(Config) for key in keys}
    assert keys["cluster.workers"].allowed == "an integer >= 1"
    assert keys["data.batch_size"].allowed == "an integer >= 1 or 'full'"
    assert keys["backend"].allowed == "one of: grpc, local, ray, sim"
    assert keys["server.optimizer"].allowed.startswith("one of: adadelta, adagrad, adam,")
    assert keys["train.target_accuracy"].allowed == "a number in (0, 1]"
    assert keys["name"].allowed == "a directory name: not empty, no '/'"
    assert keys["train.noise_eta"].meaning == ("workers add N(0, noise_eta / (1 + t)^noise_gamma) to each gradient, t "
                                               "the worker's step (Neelakantan et al. 2015): a number >= 0 (0: off)")
    open_tables = [key for key, default in {**every_key(Config), **every_key(HogwildExperiment)}.items()
                   if isinstance(default, dict)]
    assert sorted(set(open_tables)) == sorted(OPEN_TABLES)
    assert all(keys[key].documented == OPEN_TABLES[key] and keys[key].allowed.startswith("a table, e.g. {")
               for key in OPEN_TABLES)


def test_version_prints_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"asyncps {version('asyncps')}\n"


def test_version_of_a_package_not_installed_says_how(monkeypatch, capsys):
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(asyncps.lab.cli.info, "version", not_installed)
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == ("asyncps: error: asyncps is not installed, so it has no version: pip install "
                                       "-e . at the repository's top\n")
