"""Optimizer trajectories on the 2-D test surfaces of Ruder's Images 5 and 6."""
