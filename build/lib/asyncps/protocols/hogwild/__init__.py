"""Hogwild! on one machine: threads (or processes) updating one shared
parameter array without locks (``train``); see ``protocols.hogwild.train``
for the algorithm and its citation."""

from asyncps.protocols.hogwild.train import (LOSSES, MODES, MatrixCompletion, Ratings, Result, Settings, SparseClassification,
                                     SparseExamples, epoch_orders, frequency_scale, initial_params, train)

__all__ = ["SparseExamples", "Ratings", "SparseClassification", "MatrixCompletion", "Settings", "Result", "train",
           "MODES", "LOSSES", "initial_params", "epoch_orders", "frequency_scale"]
