"""The training core: loop, step, state, optimizer, phases, checkpoints, preemption, the non-finite
policy, the workdir lock, and the run reader (restore.py: a run directory back for inference)."""
