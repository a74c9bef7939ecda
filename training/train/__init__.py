"""Trainers: the generator stages (diffusion.py) and, with the extractors issue, the shared infrastructure."""
