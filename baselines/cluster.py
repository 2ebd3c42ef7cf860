"""Connect to a Ray cluster, describe it, and build the training envs on it.

Start a cluster with ``ray start --head`` on one machine and
``ray start --address=HEAD_IP:6379`` on the others (each with textgym installed), then pass
``--ray-address auto`` (on a cluster machine) or ``--ray-address HEAD_IP:6379`` to
``python -m baselines.train``, ``python -m baselines.evaluate``, ``benchmarks/quick_track.py``
or ``textgym-leaderboard verify --rerun``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any


def import_ray() -> Any:
    """Import Ray, checking it is the version textgym supports.

    Raises:
        ImportError: Ray is missing or outside the supported range; the message names
            ``pip install 'textgym[ray]'``.
    """
    from textgym.integrations import require_engine

    require_engine("ray")
    import ray

    return ray


def _check_answers(address: str, timeout: float) -> None:
    """Fail fast when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for a long time)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not 'auto' or HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({error}); start one with `ray start --head --port={port}` "
            f"or pass the address `ray start` printed"
        ) from error


def connect(address: str | None = None, num_cpus: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Connect this process to Ray (once; later calls with the same address return at once).

    Args:
        address: ``"auto"`` (the cluster this machine belongs to), ``"HOST:PORT"`` of a
            cluster's head, or None to start a local single-machine Ray bound to 127.0.0.1.
        num_cpus: CPUs of a local instance (None: all); ignored when joining a cluster.
        timeout: Seconds to wait for ``HOST:PORT`` to answer.

    Returns:
        :func:`cluster_summary` of the connected cluster.

    Raises:
        ImportError: Ray is not installed (``pip install 'textgym[ray]'``).
        ValueError: A malformed address.
        ConnectionError: Nothing answers at the address, or no cluster is found for ``"auto"``.
    """
    if address is None and "ray" not in sys.modules:
        # A local instance serves this machine only: Ray then binds every address to 127.0.0.1 (read at import).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if address not in (None, "auto"):
        _check_answers(address, timeout)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", current):
            raise ValueError(f"this process is already connected to the Ray cluster at {current}, not {address}")
        return cluster_summary()
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if address is None:
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **options)
        return cluster_summary()
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as error:
        raise ConnectionError(f"could not connect to the Ray cluster at {address!r}: {error}") from error
    return cluster_summary()


def cluster_summary() -> dict[str, Any]:
    """The connected cluster's alive nodes, CPUs and GPUs, as recorded in a run's ``summary.json``.

    Returns:
        ``address``, ``nodes``, ``cpus``, ``gpus``, ``node_ids`` and ``ray_version``.
    """
    ray = import_ray()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = ray.cluster_resources()
    return {
        "address": ray.get_runtime_context().gcs_address,
        "nodes": len(nodes),
        "cpus": float(resources.get("CPU", 0.0)),
        "gpus": float(resources.get("GPU", 0.0)),
        "node_ids": sorted(node["NodeID"] for node in nodes),
        "ray_version": ray.__version__,
    }


def run_task(function: Any, *args: Any, address: str | None, num_cpus: float = 1, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` as one Ray task of ``num_cpus`` CPUs on the cluster at ``address``.

    Args:
        function: An importable function (Ray sends it by reference).
        *args: Its positional arguments.
        address: As :func:`connect` (None or ``""``: a local Ray).
        num_cpus: CPUs Ray reserves for the task (torch in the task uses as many threads).
        **kwargs: Its keyword arguments.

    Returns:
        The function's return value; an exception it raised is raised here.

    Raises:
        ValueError: The cluster has fewer than ``num_cpus`` CPUs.
    """
    summary = connect(address or None)
    if num_cpus > summary["cpus"]:  # Ray would wait forever for an infeasible task
        raise ValueError(f"a task of {num_cpus:g} CPUs cannot run on a Ray cluster of {summary['cpus']:g} CPUs")
    import ray

    try:
        return ray.get(ray.remote(num_cpus=num_cpus)(function).remote(*args, **kwargs))
    except ray.exceptions.RayTaskError as error:
        raise error.as_instanceof_cause() from None
