"""The data suite: images/s the loader hands to the devices against images/s the train step consumes."""
import os
import tempfile

from t2ijax.benchmarks.timing import images_per_second


def data_suite(config, steps: int) -> dict:
    """On the config's own records: reading and decoding a global batch, the latent or pixel mapping and the
    transfer, against the config's compiled train step."""
    from t2ijax.training.loop import Run

    with tempfile.TemporaryDirectory() as workdir:
        run = Run(config, workdir).setup()
        batch_size = config.data.global_batch_size
        loader = images_per_second(run.device_batch, steps, batch_size)
        state, batch = run.state, run.device_batch(0)

        def train_step(_):
            nonlocal state
            state, metrics = run.train_step(state, batch)
            return metrics

        step = images_per_second(train_step, steps, batch_size)
        run.checkpointer.close()
    return {"loader_images_per_s": loader, "train_step_images_per_s": step,
            "headroom": loader / step, "global_batch_size": batch_size,
            "train_examples": {os.path.relpath(s.directory, run.data.directory): len(s)
                               for batches in run.batches for s in batches.sets}}
