"""``asyncps visualize``: every optimizer's path on the 2-D test surfaces.

The surfaces of Images 5 and 6 of Ruder's "An overview of gradient descent
optimization algorithms" (2016), Beale's function and the saddle x^2 - y^2,
crossed by the real ``optim`` optimizers with learning rates of our choosing
(:data:`lab.visualize.surfaces.RECIPES` says which and why). In the default
300 steps they show:

- the saddle, as in Image 6: SGD does not escape; Momentum and NAG do, but
  only after every adaptive method has (steps 72 and 67; the adaptive methods
  by step 54);
- Beale's function, unlike Image 5: Momentum and NAG are led off-track, as
  there (NAG less far), yet reach the minimum first (steps 77 and 73; the
  next, Adam, at 253), while Adagrad, Adadelta and RMSprop, which converge
  quickly in Image 5, do not reach it within 300 steps. Image 5's rates are
  not given; with other hyperparameters those three do arrive (Adadelta with
  eps 0.1 at step 47, before NAG).

Both outcomes depend on the rates (plain SGD at lr 0.05, for one, escapes
the saddle at step 73). The paths are computed in
:mod:`lab.visualize.surfaces` (so tests check these claims without rendering
them); this module draws them — a PNG and an animated GIF per surface — and
writes them with ``trajectories.json`` and a summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.colors import ListedColormap, LogNorm
from PIL import Image
from tqdm import tqdm

from asyncps.lab.reports.figures import save  # which also makes matplotlib headless: files only, never a window
from asyncps.lab.visualize.surfaces import DEFAULT_STEPS, RECIPES, SURFACES, Outcome, Surface, run

GIF_FRAMES = 80
GIF_DPI = 80
# Blues mixed with white: the pale look of an alpha-blended fill, opaque.
PALE_BLUES = ListedColormap(0.55 + 0.45 * matplotlib.colormaps["Blues_r"](np.linspace(0, 1, 256)))

# Colour and line style per recipe: variants that may run under Adam's path
# exactly (AdamW, AMSGrad) are dashed or dotted so that both stay visible.
LINE_STYLES: dict[str, tuple[str, str]] = {
    "sgd": ("#222222", "-"), "momentum": ("#1f77b4", "-"), "nag": ("#17becf", "-"), "adagrad": ("#2ca02c", "-"),
    "adadelta": ("#bcbd22", "-"), "rmsprop": ("#8c564b", "-"), "adam": ("#d62728", "-"), "adamw": ("#ff7f0e", "--"),
    "amsgrad": ("#e377c2", ":"), "adamax": ("#9467bd", "-"), "nadam": ("#393b79", "-")}


# -- drawing ---------------------------------------------------------------------
def _canvas(surface: Surface, dpi: int):
    """A figure with the surface's contours, its start point and its optimum."""
    fig, ax = plt.subplots(figsize=(8.4, 5.4), dpi=dpi, layout="constrained")
    x, y = np.meshgrid(np.linspace(*surface.xlim, 300), np.linspace(*surface.ylim, 300))
    z = surface.f(x, y)
    if surface.log_levels:
        levels, norm = np.logspace(-1, np.log10(z.max()), 25), LogNorm()
    else:
        levels, norm = np.linspace(z.min(), z.max(), 25), None
    ax.contourf(x, y, z, levels=levels, norm=norm, cmap=PALE_BLUES, extend="min")
    ax.contour(x, y, z, levels=levels, norm=norm, colors="#5b6b7b", linewidths=0.4, alpha=0.6)
    ax.plot(*surface.start, "o", color="black", markersize=7, zorder=5)
    ax.annotate("start", surface.start, xytext=(6, 6), textcoords="offset points")
    if surface.optimum is not None:
        ax.plot(*surface.optimum, "*", color="gold", markeredgecolor="black", markersize=16, zorder=5)
    ax.set(xlim=surface.xlim, ylim=surface.ylim, xlabel="x", ylabel="y")
    return fig, ax


def _paths(ax, outcomes: dict[str, Outcome]):
    """One line per optimizer, labelled with the step it reached the goal."""
    lines = {}
    for key, result in outcomes.items():
        color, linestyle = LINE_STYLES[key]
        when = "—" if result.reached_at is None else str(result.reached_at)
        lines[key], = ax.plot(*result.path.T, color=color, linestyle=linestyle, linewidth=1.8,
                             label=f"{RECIPES[key].label}  {when}")
    return lines


def _picture(surface: Surface, outcomes: dict[str, Outcome], steps: int, dpi: int):
    """The still picture: contours, start, optimum, every path in full; the formula and the goal as its
    title, and a legend beside the axes."""
    fig, ax = _canvas(surface, dpi)
    lines = _paths(ax, outcomes)
    start = ", ".join(f"{c:g}" for c in surface.start)
    ax.set_title(f"{surface.formula}\nstart ({start}), {steps} steps; goal: {surface.goal}", fontsize=10)
    ax.legend(title="goal met at step", loc="upper left", bbox_to_anchor=(1.01, 1.0), alignment="left",
              frameon=False, fontsize=9, title_fontsize=9)
    return fig, ax, lines


def draw_png(surface: Surface, outcomes: dict[str, Outcome], steps: int, file: Path) -> None:
    """Every path in full over the contours."""
    fig, _, _ = _picture(surface, outcomes, steps, dpi=120)
    save(fig, file)


class SharedPaletteWriter(PillowWriter):
    """A PillowWriter whose frames all share the palette of the last, fullest frame.

    Quantized one by one, every frame gets its own palette, so the unchanging
    background comes out differently each time and every frame is stored
    whole; with one palette a frame stores little more than its new segments,
    which makes the GIF about ten times smaller.
    """

    def finish(self):
        palette = self._frames[-1].convert("RGB").quantize(colors=256)
        self._frames = [frame.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE)
                        for frame in self._frames]
        super().finish()


def draw_gif(surface: Surface, outcomes: dict[str, Outcome], steps: int, file: Path, progress: tqdm) -> None:
    """The paths growing together, ``GIF_FRAMES`` frames at evenly spaced steps.

    What does not move (contours, axes, legend) is drawn once and laid under
    the frames as a bitmap, so a frame costs a few lines rather than a fresh
    layout of every text on the figure.
    """
    still, still_ax, still_lines = _picture(surface, outcomes, steps, dpi=GIF_DPI)
    for line in still_lines.values():
        line.set_data([], [])
    still.canvas.draw()
    fig = plt.figure(figsize=still.get_size_inches(), dpi=GIF_DPI)
    fig.figimage(np.array(still.canvas.buffer_rgba()), zorder=-1)  # under the axes
    ax = fig.add_axes(still_ax.get_position(), xlim=surface.xlim, ylim=surface.ylim)
    ax.set_axis_off()
    plt.close(still)

    lines = {key: ax.plot([], [], color=LINE_STYLES[key][0], linestyle=LINE_STYLES[key][1], linewidth=1.8)[0]
             for key in outcomes}
    heads = {key: ax.plot([], [], "o", color=LINE_STYLES[key][0], markersize=6)[0] for key in outcomes}
    counter = ax.text(0.98, 0.02, "", transform=ax.transAxes, ha="right", va="bottom")
    shown_steps = np.unique(np.linspace(0, steps, GIF_FRAMES).round().astype(int))

    def show(frame: int):
        step = shown_steps[frame]
        for key, result in outcomes.items():
            points = result.path[: step + 1]
            lines[key].set_data(*points.T)
            heads[key].set_data(*points[-1:].T)
        counter.set_text(f"step {step}")

    animation = FuncAnimation(fig, show, frames=len(shown_steps))
    animation.save(file, writer=SharedPaletteWriter(fps=15), progress_callback=lambda i, n: progress.update())
    plt.close(fig)


# -- outputs ---------------------------------------------------------------------
def summary(surface: Surface, outcomes: dict[str, Outcome], steps: int) -> str:
    """A small table: where each optimizer ended and whether it met the goal."""
    start = ", ".join(f"{c:g}" for c in surface.start)
    rows = [f"{surface.name}: {steps} steps from ({start}); goal: {surface.goal}",
            f"  {'optimizer':<10} {'final point':>22} {'final loss':>11}  goal"]
    for key, result in outcomes.items():
        x, y = result.path[-1]
        taken = len(result.path) - 1
        goal = "no" if result.reached_at is None else f"yes, at step {result.reached_at}"
        left = "" if taken == steps else f" (off the picture after {taken} steps)"
        rows.append(f"  {RECIPES[key].label:<10} ({x:>9.3f}, {y:>9.3f}) {result.loss:>11.3g}  {goal}{left}")
    return "\n".join(rows)


def _as_json(surface: Surface, outcomes: dict[str, Outcome]) -> dict:
    optimum = None if surface.optimum is None else list(surface.optimum)
    return {"formula": surface.formula, "start": list(surface.start), "optimum": optimum, "goal": surface.goal,
            "optimizers": {key: {"label": RECIPES[key].label, "optimizer": RECIPES[key].optimizer,
                                 "hparams": RECIPES[key].hparams[surface.name], "reached_at": result.reached_at,
                                 "final_loss": result.loss, "path": result.path.tolist()}
                           for key, result in outcomes.items()}}


def visualize(out: Path, steps: int = DEFAULT_STEPS, surfaces: Sequence[str] = tuple(SURFACES),
              keys: Sequence[str] = tuple(RECIPES), gif: bool = True) -> str:
    """Write ``<surface>.png`` (and ``<surface>.gif``) per surface and
    ``trajectories.json`` into ``out``; return the text summary."""
    out.mkdir(parents=True, exist_ok=True)
    results = {name: run(SURFACES[name], keys, steps) for name in surfaces}
    work = len(surfaces) * (1 + (GIF_FRAMES if gif else 0))
    with tqdm(total=work, desc="rendering", unit="frame") as progress:
        for name, outcomes in results.items():
            draw_png(SURFACES[name], outcomes, steps, out / f"{name}.png")
            progress.update()
            if gif:
                draw_gif(SURFACES[name], outcomes, steps, out / f"{name}.gif", progress)
    record = {"steps": steps, "surfaces": {name: _as_json(SURFACES[name], o) for name, o in results.items()}}
    (out / "trajectories.json").write_text(json.dumps(record))
    return "\n\n".join(summary(SURFACES[name], outcomes, steps) for name, outcomes in results.items())
