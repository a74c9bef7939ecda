"""Trainers: every stage runs on accelerate through :func:`.common.run_stage`."""
