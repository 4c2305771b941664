"""Analyses built on simulations: sweeps over policies and capacities, trace validation, compile-time
prediction and DRAM traffic attribution."""
