"""Picks the tf.distribute strategy (the training devices, not a triplet rule): MirroredStrategy over local devices, or multi-worker."""

import json
import os

import tensorflow as tf


def configure_cpu_replicas(num_replicas: int) -> None:
    """Splits the CPU into `num_replicas` logical devices; must run before any TF op."""
    if num_replicas <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_replicas)
    except RuntimeError as e:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != num_replicas:
            raise RuntimeError(
                f"--num_cpu_replicas={num_replicas}: TensorFlow was already initialised with "
                f"{existing} logical CPU device(s); set it before any TF op runs") from e


def make_distribute_strategy(distribution: str = "mirrored",
                             num_cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs, else over `num_cpu_replicas` logical CPUs (or one CPU).

    distribution="multi_worker" gives MultiWorkerMirroredStrategy, configured by TF_CONFIG.
    """
    if distribution == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("distribution=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster spec and this worker's task)")
        configure_cpu_replicas(num_cpu_replicas)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution != "mirrored":
        raise ValueError(f"distribution must be 'mirrored' or 'multi_worker', "
                         f"got {distribution!r}")
    configure_cpu_replicas(num_cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    count = max(1, num_cpu_replicas)
    return tf.distribute.MirroredStrategy([d.name for d in cpus[:count]])


def task_info() -> tuple[str, int]:
    """(task type, task index) from TF_CONFIG; ("chief", 0) on a single machine."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = spec.get("task") or {}
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief(distribute_strategy: tf.distribute.Strategy) -> bool:
    """The one worker that writes checkpoints, exports and mined generations."""
    if not isinstance(distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, index = task_info()
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0
