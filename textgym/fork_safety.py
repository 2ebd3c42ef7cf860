"""Keep torch usable in processes forked after torch ran, as vector envs' workers are.

Torch's CPU build runs its parallel operations, and MKL its matrix products, on a GNU
OpenMP (libgomp) thread pool. libgomp is not fork-safe: a child forked after the parent
ran a parallel region inherits the pool's bookkeeping but not its threads, and its first
parallel region waits forever for them. An env that ran (its LM proposing candidates)
before ``gym.make_vec(..., vectorization_mode="async")`` forked its workers would hang
them that way, as would other torch work in the parent that ran a parallel operation.

A process forked from one that imported torch therefore runs torch on one thread: it
never starts a parallel region, so the inherited pool is never waited on. That is also
what torch's ``DataLoader`` gives its workers, and vector-env workers, one per env, use
the cores between them. Processes started with ``"spawn"`` or ``"forkserver"`` begin
afresh and keep torch's default. Code in a forked child may raise the count with
``torch.set_num_threads`` only if its parent never ran a parallel torch operation.

Seeded proposals repeat exactly at a given thread count. Torch's CPU attention kernel
can round differently on another count, which rarely changes a sampled token, so a
forked worker's proposals are those of the same env in a process on one thread.
"""

from __future__ import annotations

import os
import sys

_registered = False


def _one_torch_thread_after_fork() -> None:
    # Runs in the child right after fork(); only a torch the parent imported can hold a used pool.
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def register_fork_handler() -> None:
    """Make every process forked from this one run torch on one thread (idempotent).

    ``import textgym`` calls this, so forked vector-env workers of every TextGym id can
    run their LM whether or not an env, or other torch code, ran in the parent first.
    """
    global _registered
    if _registered or not hasattr(os, "register_at_fork"):  # no fork() on Windows
        return
    os.register_at_fork(after_in_child=_one_torch_thread_after_fork)
    _registered = True
