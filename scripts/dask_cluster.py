"""Starts a dask.distributed cluster of worker processes on this machine, for Beam's DaskRunner.

    python scripts/dask_cluster.py --n_workers 2 [--port 8786] [--address_file PATH]

Prints the scheduler address (tcp://HOST:PORT; pass it to a job as
--runner=DaskRunner --dask_client_address=HOST:PORT), writes it to --address_file if given,
and serves until interrupted (Ctrl-C or SIGTERM). The same cluster from dask's own command
line: `dask scheduler --port 8786` and, per worker, `dask worker tcp://HOST:8786
--nworkers 1 --nthreads 1`. Needs the [dask] extra (pip install -e .[dask]).
"""

import os
import signal
import threading

from absl import app, flags
from dask.distributed import LocalCluster

FLAGS = flags.FLAGS
flags.DEFINE_integer("n_workers", 2, "Worker processes.", lower_bound=1)
flags.DEFINE_integer("threads_per_worker", 1, "Threads in each worker process.", lower_bound=1)
flags.DEFINE_string("host", "127.0.0.1", "Interface the scheduler and workers listen on.")
flags.DEFINE_integer("port", 0, "Scheduler port (0: any free port).")
flags.DEFINE_string("address_file", None, "Also write the scheduler address here (atomically).")


def start_cluster(n_workers: int, threads_per_worker: int = 1, host: str = "127.0.0.1",
                  port: int = 0) -> LocalCluster:
    """A LocalCluster of `n_workers` processes (not threads: Beam DoFns hold the GIL)."""
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                        processes=True, host=host, scheduler_port=port,
                        dashboard_address=":0")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with start_cluster(FLAGS.n_workers, FLAGS.threads_per_worker, FLAGS.host,
                       FLAGS.port) as cluster:
        address = cluster.scheduler_address
        if FLAGS.address_file:
            tmp = f"{FLAGS.address_file}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(address + "\n")
            os.replace(tmp, FLAGS.address_file)
        print(f"dask scheduler {address} with {FLAGS.n_workers} worker processes; "
              f"Ctrl-C to stop", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    app.run(main)
