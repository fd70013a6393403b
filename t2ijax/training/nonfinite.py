"""What a training step with a NaN/Inf loss, gradient norm or new state does (config.nonfinite.policy).

A finite gradient can still give non-finite parameters (an optimizer dividing 0 by 0), so the step
checks the state it produces too: params, optimizer state and EMA.

  skip: the step keeps the old params, optimizer state and EMA (the step counter, hence the data
        position, still advances) and is counted in `skipped_steps`.
  halt: the host stops at the first such step it reads, before writing any checkpoint after it,
        and names the step, the metric and the last checkpoint (all written before that step).
The jitted step flags every step (`nonfinite` in its metrics) under both policies.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import NonFiniteError
from t2ijax.registry import names

POLICIES = names("nonfinite.policy")
WATCHED = ("loss", "grad_norm")


def is_finite(metrics: dict[str, jax.Array]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(metrics[name]) for name in WATCHED]))


def tree_is_finite(tree) -> jax.Array:
    """True when every floating-point value of `tree` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def keep_if(finite: jax.Array, new, old):
    """`new` where `finite`, else `old`, leaf by leaf (bit for bit `new` when finite)."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


class Monitor:
    """The host's side: reads the flags of finished steps, counts skips, halts."""

    def __init__(self, policy: str, skipped_steps: int):
        self.policy = policy
        self.skipped_steps = skipped_steps

    def check(self, metrics: list[dict[str, np.ndarray]], first_step: int,
              last_checkpoint: Callable[[], int | None]) -> None:
        """`metrics` of the updates after state step `first_step` (fetched to the host). Steps are
        named as in the log lines and checkpoints: step N is the N-th update."""
        for step, m in enumerate(metrics, first_step + 1):
            if not m["nonfinite"]:
                continue
            if self.policy == "skip":
                self.skipped_steps += 1
                continue
            bad = [name for name in WATCHED if not np.isfinite(m[name])]
            what = (f"{bad[0]} was {float(m[bad[0]])}" if bad else
                    "the updated params, optimizer state or EMA held a NaN/Inf (loss and gradient norm were finite)")
            last = last_checkpoint()
            last = "no checkpoint was written" if last is None else f"the last checkpoint is step {last}"
            raise NonFiniteError(f"{what} at step {step}; {last} and none was written after "
                                 "it. Lower the learning rate or set config.nonfinite.policy='skip', then rerun to "
                                 "resume from it")
