"""Plots and tables made from run directories."""
