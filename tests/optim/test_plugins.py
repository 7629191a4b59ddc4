"""Plugins by import path (optim.plugins): how one is found, what refuses it, and that a lookup by
registered name is as before. The config's refusals, key by key, are in tests/lab/test_plugin_runs.py."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

from asyncps import optim
from asyncps.optim.base import Optimizer
from asyncps.optim.plugins import PluginError, Registry
from asyncps.optim.validation import choose


KIND = optim.OPTIMIZER  # what a plugin optimizer must be: the interface these tests load plugins against


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The working directory, an empty project: ``write(path, source)`` adds a module to it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # resolving a plugin puts the working directory on it
    written = set()

    def write(path: str, source: str) -> None:
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(source))
        written.add(path.split("/")[0].removesuffix(".py"))
        importlib.invalidate_caches()

    yield write
    for name in [name for name in sys.modules if name.split(".")[0] in written]:
        del sys.modules[name]


def test_a_plugin_is_found_in_the_working_directory_which_goes_first_on_the_import_path(project, tmp_path):
    project("plugpkg/__init__.py", "")
    project("plugpkg/rules.py", """
        from asyncps.optim import Optimizer

        class Plain(Optimizer):
            name = "plain"

            def reference(self, p, g, state, lr):
                p.add_(g, alpha=-lr)

        class Outer:
            class Inner(Plain):
                name = "inner"
        """)
    plain = KIND.load("plugpkg.rules:Plain")
    assert plain(lr=0.5).lr == 0.5 and sys.path[0] == str(tmp_path)
    assert KIND.load("plugpkg.rules:Outer.Inner").name == "inner"  # a dotted attribute


@pytest.mark.parametrize("path, reason", [
    ("plugnone.rules:Plain", "no module named 'plugnone'"),
    ("plugbad.nothing:Plain", "no module named 'plugbad.nothing'"),
    ("plugbad.rules:Nothing", "plugbad.rules has no Nothing"),
    ("plugbad.rules:value", "plugbad.rules:value is not an optim.Optimizer subclass"),
    ("plugbad.rules:function", "plugbad.rules:function is not an optim.Optimizer subclass"),
    ("plugbad.rules:Nameless", "plugbad.rules:Nameless does not define name (an optim.Optimizer subclass must "
                               "define name, reference)"),
    ("plugbad.rules:Idle", "plugbad.rules:Idle does not define reference (an optim.Optimizer subclass must define "
                           "name, reference)"),
    ("plugbad.rules:NoLr", "plugbad.rules:NoLr does not take lr: it is called as cls(lr, **hyperparameters)"),
    ("plugbad.rules", "an import path is 'package.module:Name'"),
    ("plugbad.rules:Plain:x", "an import path is 'package.module:Name'"),
    ("plugbad/rules:Plain", "an import path is 'package.module:Name'"),
])
def test_a_plugin_that_is_not_there_or_not_of_the_kind_is_refused_saying_why(project, path, reason):
    project("plugbad/__init__.py", "")
    project("plugbad/rules.py", """
        from asyncps.optim import Optimizer

        value = 3

        def function(lr):
            pass

        class Nameless(Optimizer):
            def reference(self, p, g, state, lr):
                p.add_(g, alpha=-lr)

        class Idle(Optimizer):
            name = "idle"

        class NoLr(Optimizer):
            name = "no_lr"

            def __init__(self, rate):
                super().__init__(rate)

            def reference(self, p, g, state, lr):
                p.add_(g, alpha=-lr)
        """)
    with pytest.raises(PluginError) as caught:
        KIND.load(path)
    assert str(caught.value) == reason


def test_a_module_missing_inside_the_users_own_code_is_raised_as_it_is_with_its_traceback(project):
    project("plugdep.py", "import plug_missing_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="No module named 'plug_missing_dependency'"):
        KIND.load("plugdep:Thing")


def test_choose_takes_a_name_or_from_a_registry_a_plugin_and_says_both(project):
    project("plugopt.py", """
        from asyncps.optim.sgd import SGD

        class Mine(SGD):
            name = "mine"
        """)
    assert choose(optim.OPTIMIZERS, "adam", "optimizer name") is optim.Adam  # as before
    assert choose(optim.OPTIMIZERS, "plugopt:Mine", "optimizer name").name == "mine"
    assert isinstance(optim.create("plugopt:Mine", lr=0.5), optim.SGD)
    with pytest.raises(ValueError) as caught:
        choose(optim.OPTIMIZERS, "plugopt:Yours", "optimizer name")
    assert str(caught.value) == "Invalid optimizer name: 'plugopt:Yours' (plugopt has no Yours)"
    with pytest.raises(ValueError) as caught:
        choose(optim.OPTIMIZERS, "adamm", "optimizer name")
    assert str(caught.value).endswith("'sgd'], or a plugin 'package.module:Name')")
    # A plain dict is no registry of plugins: a colon is just part of a name it does not have.
    with pytest.raises(ValueError) as caught:
        choose({"a": 1}, "plugopt:Mine", "thing")
    assert str(caught.value) == "Invalid thing: 'plugopt:Mine' (choose one of ['a'])"


def test_an_entry_registered_from_python_is_chosen_by_its_name(monkeypatch):
    monkeypatch.setitem(optim.OPTIMIZERS, "mine", optim.SGD)
    assert choose(optim.OPTIMIZERS, "mine", "optimizer name") is optim.SGD
    assert isinstance(optim.OPTIMIZERS, Registry)


class HeavyBall(Optimizer):
    """SGD with momentum, written once, as the paper writes it (no fast kernel): torch.optim.SGD's oracle."""

    name = "heavy_ball"
    slots = ("momentum_buffer",)

    def __init__(self, lr=0.1, momentum=0.9):
        super().__init__(lr)
        self.momentum = momentum

    def reference(self, p, g, state, lr):
        buf = state["momentum_buffer"]
        if state.step == 1:
            buf.copy_(g)
        else:
            buf.mul_(self.momentum).add_(g)
        p.add_(buf, alpha=-lr)


def test_an_optimizer_with_only_a_reference_kernel_runs_it_on_every_path_and_matches_torch():
    torch.manual_seed(0)
    param, grads = torch.randn(3, 4), [torch.randn(3, 4) for _ in range(3)]
    ours, oracle = HeavyBall(), param.clone().requires_grad_()
    torch_opt = torch.optim.SGD([oracle], lr=0.1, momentum=0.9)
    mine, state = param.clone(), HeavyBall().init(param)
    for g in grads:
        ours.step(mine, g, state)  # the fast path: the base's, the reference on views of the same memory
        oracle.grad = g.clone()
        torch_opt.step()
    torch.testing.assert_close(mine, oracle.detach())
    torch.testing.assert_close(state["momentum_buffer"], torch_opt.state[oracle]["momentum_buffer"])
    # A shard's flat buffers, written to out: param is left as it was.
    flat, out, flat_state = param.reshape(-1).clone(), torch.empty(12), HeavyBall().init(param.reshape(-1))
    ours.update(flat.numpy(), grads[0].reshape(-1).numpy(), flat_state, out.numpy())
    torch.testing.assert_close(flat, param.reshape(-1))
    torch.testing.assert_close(out, param.reshape(-1) - 0.1 * grads[0].reshape(-1))
    # Sparse rows.
    table, table_state = param.clone(), HeavyBall().init(param)
    ours.step_rows(table, torch.tensor([2, 0]), grads[0][[2, 0]], table_state)
    torch.testing.assert_close(table[1], param[1])
    torch.testing.assert_close(table[[0, 2]], param[[0, 2]] - 0.1 * grads[0][[0, 2]])
