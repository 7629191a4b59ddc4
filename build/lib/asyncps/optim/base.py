"""The optimizer contract shared by every algorithm in the library.

An optimizer is a small object of validated hyperparameters with three verbs
on torch tensors: ``init(param) -> State``, an in-place dense
``step(param, grad, state)`` and a lazy sparse
``step_rows(table, rows, grad_rows, state)``. All mutable data lives in the
explicit :class:`State` (a step count and named tensors), so a shard can
checkpoint it, ship it or restore it without knowing which algorithm made it.

Each algorithm writes its update twice, side by side: ``reference`` — the rule
as the paper writes it, in torch ops that follow ``torch.optim``'s own order of
operations — and ``fast``, a one-pass numba kernel over flat arrays that reads
and writes each element once. ``step`` takes the fast kernel whenever the
tensors allow it (contiguous, one dtype); tests hold the two equal. A caller
that owns flat numpy buffers (a parameter-server shard) calls the fast kernel
directly through ``update``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union

import numpy as np
import torch
from numba import njit

from asyncps.optim.schedules import Schedule, lr_at
from asyncps.optim.validation import check, is_number

LearningRate = Union[float, Schedule]

FLOAT_DTYPES = (torch.float32, torch.float64)


@dataclass
class State:
    """Everything an optimizer remembers about one tensor.

    ``step`` counts the updates applied so far; ``tensors`` holds the named
    slots (``exp_avg``, ``sum``, ...), each the shape of the parameter, plus any
    0-d scalars an algorithm carries (NAdam's ``mu_product``).

    ``arrays`` holds each tensor's flat numpy view (sharing its memory; None
    for a non-contiguous tensor), made here, with the state, for the fast
    kernels. So the tensors are fixed at construction: updates write them in
    place, and a state with other tensors is a new ``State``.
    """

    step: int = 0
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    arrays: dict[str, np.ndarray | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.arrays = {slot: flat_view(t.detach()) for slot, t in self.tensors.items()}

    def __getstate__(self) -> dict:
        # A pickled or copied view would be a copy of its own; the views are remade with the tensors.
        return {"step": self.step, "tensors": self.tensors}

    def __setstate__(self, saved: dict) -> None:
        self.step, self.tensors = saved["step"], saved["tensors"]
        self.__post_init__()

    def state_dict(self) -> dict:
        """A detached copy: later steps do not change what was saved."""
        return {"step": self.step, "tensors": {k: v.clone() for k, v in self.tensors.items()}}

    @classmethod
    def from_state_dict(cls, saved: dict) -> "State":
        if set(saved) != {"step", "tensors"}:
            raise ValueError(f"Invalid state dict: keys {sorted(saved)} (expected ['step', 'tensors'])")
        return cls(int(saved["step"]),
                   {k: v.clone(memory_format=torch.contiguous_format) for k, v in saved["tensors"].items()})

    def __getitem__(self, slot: str) -> torch.Tensor:
        return self.tensors[slot]


def flat_view(t: torch.Tensor) -> np.ndarray | None:
    """``t`` (detached) as the flat numpy array a fast kernel reads and writes,
    sharing its memory; None when it is not contiguous (no flat view exists)."""
    if not t.is_contiguous():
        return None
    a = t.numpy()
    return a if a.ndim == 1 else a.reshape(-1)


def check_lr(lr: LearningRate) -> None:
    if callable(lr):
        lr_at(lr, 0)  # a schedule that is negative from the start fails here, not mid-run
        return
    check(is_number(lr) and lr >= 0, "learning rate", lr, "lr must be a finite number >= 0 or a schedule step -> lr")


def check_tensor(x, what: str) -> torch.Tensor:
    """``x`` detached (a step writes a parameter that may require grad), or a
    TypeError: the public verbs take torch tensors, ``update`` numpy arrays."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Invalid {what}: expected a torch tensor, got {type(x).__name__} "
                        "(torch.from_numpy(array) shares the array's memory)")
    return x.detach()


def check_pair(param: torch.Tensor, grad: torch.Tensor, what: str = "param") -> None:
    if param.dtype not in FLOAT_DTYPES:
        raise ValueError(f"Invalid {what} dtype: {param.dtype} (expected torch.float32 or torch.float64)")
    if grad.dtype != param.dtype:
        raise ValueError(f"Invalid grad dtype: {grad.dtype} ({what} is {param.dtype}; pass a gradient of the same dtype)")
    if grad.shape != param.shape:
        raise ValueError(f"Invalid grad shape: {tuple(grad.shape)} ({what} has shape {tuple(param.shape)})")
    if param.device.type != "cpu" or grad.device.type != "cpu":
        raise ValueError("Invalid device: asyncps optimizers run on CPU tensors")


class Optimizer:
    """Base class: validated hyperparameters, explicit state, dense and lazy sparse steps.

    Subclasses set ``name`` and ``slots`` (the per-element state tensors) and
    implement ``reference(param, grad, state, lr)`` (in place) and, for
    speed, ``fast(param, grad, state, lr, out)`` (else ``reference`` runs in
    its place); both see ``state.step`` already advanced to the step being
    taken (1 for the first update) and ``lr`` already read off the schedule.
    A plugin's (``server.optimizer = "mypkg.optim:Mine"``; ``optim.plugins``)
    is the same: ``__init__(self, lr, **hyperparameters)`` validates them and
    calls ``super().__init__(lr)``, and ``reference`` updates in place.
    """

    name: ClassVar[str]
    slots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr: LearningRate):
        check_lr(lr)
        self.lr = lr

    def hparams(self) -> dict:
        """The constructor arguments, so ``create(opt.name, **opt.hparams())`` rebuilds it."""
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"

    # -- state -----------------------------------------------------------------
    def init(self, param: torch.Tensor) -> State:
        p = check_tensor(param, "param")
        if p.dtype not in FLOAT_DTYPES:
            raise ValueError(f"Invalid param dtype: {p.dtype} (expected torch.float32 or torch.float64)")
        return State(0, {slot: torch.zeros_like(p, memory_format=torch.contiguous_format) for slot in self.slots})

    # -- dense -----------------------------------------------------------------
    def step(self, param: torch.Tensor, grad: torch.Tensor, state: State, out: torch.Tensor | None = None) -> None:
        """One update, with the fast kernel where it applies.

        In place by default; with ``out`` the new values are written there and
        ``param`` is left as it was (the state still advances). A parameter
        server publishes snapshots this way: readers keep the old values while
        the update writes a spare buffer, at the cost of no extra pass.
        """
        p, g = check_tensor(param, "param"), check_tensor(grad, "grad")
        check_pair(p, g)
        self._check_state(p, state)
        if out is not None:
            out = check_tensor(out, "out")
            if out.shape != p.shape or out.dtype != p.dtype:
                raise ValueError(f"Invalid out: {out.dtype} {tuple(out.shape)} "
                                 f"(expected {p.dtype} {tuple(p.shape)}, like param)")
        self._dense_step(p, g, state, out, 1.0)

    def update(self, p: np.ndarray, g: np.ndarray, state: State, out: np.ndarray | None = None,
               lr_scale: float = 1.0) -> None:
        """The fast kernel alone, unchecked, for a caller that owns flat buffers
        and has made the checks: a shard validates every push, and updates
        slices of a few hundred floats thousands of times a second.

        ``p``, ``g`` and ``out`` (``None``: in place) are flat (1-D),
        contiguous numpy arrays of the dtype of ``state``'s slots, which must
        be contiguous (``opt.init`` makes them so). Nothing is converted or
        checked here: anything else is a numba typing error or a wrong result.
        ``lr_scale`` multiplies this update's learning rate (a staleness-aware
        server divides it by the push's staleness)."""
        lr = lr_at(self.lr, state.step) * lr_scale
        state.step += 1
        self.fast(p, g, state, lr, out)

    def reference_step(self, param: torch.Tensor, grad: torch.Tensor, state: State) -> None:
        """The same update through the readable reference kernel only."""
        p, g = check_tensor(param, "param"), check_tensor(grad, "grad")
        check_pair(p, g)
        self._check_state(p, state)
        lr = lr_at(self.lr, state.step)
        state.step += 1
        self.reference(p, g, state, lr)

    def _dense_step(self, p: torch.Tensor, g: torch.Tensor, state: State, out: torch.Tensor | None,
                    lr_scale: float) -> None:
        """The checked update (``p``, ``g`` and ``out`` share a dtype): the fast
        kernel when every tensor and slot has a flat view of that dtype, else
        the reference kernel."""
        pa, ga, oa = flat_view(p), flat_view(g), None if out is None else flat_view(out)
        slots = [state.arrays.get(slot) for slot in self.slots]
        fast = (pa is not None and ga is not None and (oa is not None or out is None)
                and all(a is not None and a.dtype == pa.dtype for a in slots))
        if fast:
            self.update(pa, ga, state, oa, lr_scale)
            return
        lr = lr_at(self.lr, state.step) * lr_scale
        state.step += 1
        self.reference(p if out is None else out.copy_(p), g, state, lr)

    def _check_state(self, p: torch.Tensor, state: State) -> None:
        missing = [s for s in self.slots if s not in state.tensors]
        if missing:
            raise ValueError(f"Invalid state: missing slots {missing} for {self.name} (create it with opt.init(param))")
        for slot in self.slots:
            if state.tensors[slot].shape != p.shape:
                raise ValueError(
                    f"Invalid state: slot {slot!r} has shape {tuple(state.tensors[slot].shape)}, "
                    f"param has shape {tuple(p.shape)} (was the state made for another tensor?)"
                )

    def reference(self, p: torch.Tensor, g: torch.Tensor, state: State, lr: float) -> None:
        raise NotImplementedError

    def fast(self, p: np.ndarray, g: np.ndarray, state: State, lr: float, out: np.ndarray | None) -> None:
        """The reference update in one pass over flat numpy arrays, reading ``p``
        and writing ``out`` (``None``: in place); ``state.arrays[slot]`` is
        each slot's flat view. The kernel takes its scalars as Python floats and
        casts them to the arrays' dtype first (``to = p.dtype.type``), so a
        float32 update computes in float32, as torch does: a numpy scalar made
        in Python for each would cost more than a small update.

        Without a kernel of its own, an optimizer (a plugin's, say) runs its
        ``reference`` here, on torch views of the same memory, shaped as the
        slots (whose tensors share their memory with ``state.arrays``)."""
        if out is not None:
            np.copyto(out, p)
            p = out
        shape = state.tensors[self.slots[0]].shape if self.slots else (-1,)
        self.reference(torch.from_numpy(p).view(shape), torch.from_numpy(g).view(shape), state, lr)

    # -- sparse rows -----------------------------------------------------------
    def step_rows(self, table: torch.Tensor, rows: torch.Tensor, grad_rows: torch.Tensor, state: State,
                  lr_scale: float = 1.0) -> None:
        """Lazy sparse update: only ``table[rows]`` and the same rows of the state change.

        Duplicate row ids have their gradients summed first (the update is not
        linear in the gradient). The touched rows are then updated exactly as
        the dense rule would update them; untouched rows keep their values and
        state (as ``torch.optim.SparseAdam``). ``state.step`` advances once.
        ``lr_scale`` multiplies this update's learning rate, as in ``update``.
        """
        t = check_tensor(table, "table")
        idx = check_tensor(rows, "rows")
        g = check_tensor(grad_rows, "grad_rows")
        if t.dim() != 2:
            raise ValueError(f"Invalid table: {t.dim()}-D (step_rows updates a 2-D table of rows)")
        if idx.dtype != torch.int64 or idx.dim() != 1:
            raise ValueError(f"Invalid rows: {idx.dim()}-D {idx.dtype} (expected a 1-D torch.int64 index vector)")
        if g.shape != (idx.numel(), t.shape[1]):
            raise ValueError(
                f"Invalid grad_rows shape: {tuple(g.shape)} (expected ({idx.numel()}, {t.shape[1]}): one row per index)"
            )
        if t.dtype not in FLOAT_DTYPES or g.dtype != t.dtype:
            raise ValueError(
                f"Invalid dtypes: table {t.dtype}, grad_rows {g.dtype} (expected one of torch.float32/float64 for both)"
            )
        self._check_state(t, state)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= t.shape[0]):
            raise ValueError(f"Invalid rows: ids must be in [0, {t.shape[0]}), got [{int(idx.min())}, {int(idx.max())}]")

        touched, where = torch.unique(idx, return_inverse=True)
        g_sum = torch.zeros(touched.numel(), t.shape[1], dtype=t.dtype).index_add_(0, where, g)
        sub_table = t.index_select(0, touched)
        sub_state = State(state.step, {
            k: v.index_select(0, touched) if k in self.slots else v for k, v in state.tensors.items()
        })
        self._dense_step(sub_table, g_sum, sub_state, None, lr_scale)
        t.index_copy_(0, touched, sub_table)
        for slot in self.slots:
            state.tensors[slot].index_copy_(0, touched, sub_state.tensors[slot])
        state.step = sub_state.step


@njit(inline="always")
def lerp(start, end, weight, one_minus_weight, small_weight):
    """torch's ``lerp``, which switches formula at weight 0.5; following it keeps
    the fast kernels bit-close to torch."""
    return start + weight * (end - start) if small_weight else end - (end - start) * one_minus_weight


def weight_decay_terms(lr: float, weight_decay: float, decoupled: bool) -> tuple[float, float]:
    """``(decay_factor, coupled)`` for a fast kernel: decoupled decay (AdamW)
    scales the parameter by ``1 - lr * wd`` first; coupled (L2) decay adds
    ``wd * theta`` to the gradient."""
    return (1 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)

