"""Optimizer trajectories on 2-D test surfaces (Ruder's Images 5 and 6)."""
