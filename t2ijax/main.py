"""Train a text-to-image flow-matching model.

  python -m t2ijax.main --config=configs/shapes_tiny.py --workdir=workdirs/shapes_tiny \
      [--config.total_steps=3000 --config.model.depth=6 ...]

Several processes (one per host): every process runs the same command; on Cloud TPU, SLURM and
Open MPI they find each other, elsewhere add --config.distributed.coordinator_address=HOST:PORT
--config.distributed.num_processes=N --config.distributed.process_id=I (docs/launch.md).
The workdir is a local directory or gs://BUCKET/PATH. Resumes automatically from the newest good
checkpoint in the workdir; one trainer per workdir (on a disk a second is refused; in a bucket the
launcher must ensure it: docs/reliability.md). Exit codes: 0 done, 1 an error to fix (one line), 75
stopped by SIGTERM or SIGINT (Ctrl-C): after writing a checkpoint at the current step, or during
setup with nothing to save (rerun the same command to resume).
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from t2ijax import host_memory
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

flags.DEFINE_string("workdir", None, "the run's directory, where its checkpoints, TensorBoard logs, sample grids and "
                    "eval JSON go (made if missing; a run already there resumes), e.g. --workdir=workdirs/shapes_tiny "
                    "or gs://BUCKET/runs/shapes_tiny",
                    required=True)
config_flags.DEFINE_config_file("config", None, "Config file (see configs/).", lock_config=True)
# Other libraries' log lines and progress bars are left out; absl's --verbosity=1 brings them back (t2ijax.cli).
FLAGS = flags.FLAGS


def main(argv):
    quiet_libraries()
    host_memory.tune_for_cpu()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; overrides look like --config.model.depth=4")
    from t2ijax import storage
    from t2ijax.errors import ConfigError, DistributedError, NonFiniteError, StorageError
    from t2ijax.models.text.packaged import check as check_installed
    from t2ijax.sharding import initialize_distributed
    from t2ijax.training.loop import train_and_evaluate
    from t2ijax.training.preemption import (EXIT_CODE, Preempted, exit_during_setup,
                                            forward_sigint_if_distributed)

    exit_during_setup()
    config = loaded_config(FLAGS.config)
    try:
        check_installed(config)  # before any work: a missing package is one line naming the pip command
        storage.check_bucket(FLAGS.workdir)  # a bad scheme or a missing bucket, before any host waits for another
        initialize_distributed(config.distributed)
        forward_sigint_if_distributed()
        outputs = train_and_evaluate(config, FLAGS.workdir)
    except (StorageError, DistributedError) as e:
        # The failed save's writer threads would each print a traceback at interpreter exit, and jax's
        # teardown would wait for a dead process, then abort; what was complete is on disk, so leave
        # without that teardown.
        print(f"error: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    except (ConfigError, NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:
        logging.warning("%s", e)
        sys.exit(EXIT_CODE)
    logging.info("done")
    print("\n".join([
        f"checkpoints:  {outputs['checkpoints']}",
        f"tensorboard:  tensorboard --logdir {outputs['tensorboard']}",
        f"sample grid:  {outputs['samples']}",
        f"eval JSON:    {outputs['eval']}",
    ]))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
