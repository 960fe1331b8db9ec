"""``pretrain_size``: what the pretraining pod requests, decided at run time from the node count."""

from typing import NamedTuple

from kfp import dsl

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def pretrain_size(nodes: int, cpu: str, memory: str, waiting_cpu: str,
                  waiting_memory: str) -> NamedTuple("PodSize", cpu=str, memory=str):
    """The pretraining pod's CPU and memory requests, as strings a KFP 2.17 driver resolves
    (``resolvePodSpecInputRuntimeParameter``): ``cpu``/``memory`` on one node, ``waiting_cpu``/
    ``waiting_memory`` when ``nodes > 1`` (the pod only waits for the multi-node job).

    Args:
        nodes: pretraining nodes (at least 1).
        cpu, memory: the requests of a pod that trains.
        waiting_cpu, waiting_memory: the requests of a pod that waits (a plan step's).
    """
    from collections import namedtuple

    from jetlib.placement import pretrain_requests
    from jetlib.steps import step_errors

    with step_errors():
        size = pretrain_requests(nodes, (cpu, memory), (waiting_cpu, waiting_memory))
    return namedtuple("PodSize", ["cpu", "memory"])(*size)
