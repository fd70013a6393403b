"""The training loop: setup, data, state, compiled steps, loop, final evaluation."""
import io
import json
import os
import socket
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from t2ijax import sharding, storage
from t2ijax.config import flatten, validate, warn_unreached_warmup
from t2ijax.data import buckets, pipeline
from t2ijax.data.run_data import open_run_data, training_sets
from t2ijax.diffusion.generate import Generator, generator_at, image_grid, view_scale
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.interop import finetune
from t2ijax.metrics import evaluation, tensorboard_events
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.techniques import ema
from t2ijax.techniques.frozen import load_frozen, needs_images
from t2ijax.training import checkpoint, compile_ahead, nonfinite, phases, preemption, profiling, state as train_state
from t2ijax.training.optim import run_optimizer
from t2ijax.training.restore import load_run_config, with_resolved_paths
from t2ijax.training.step import jit_train_step, make_heldout_loss, make_train_step
from t2ijax.training.workdir_lock import WorkdirLock


def check_writable(directory: str) -> None:
    path = storage.resolve(directory)
    probe = path / f".write-test-{socket.gethostname()}-{os.getpid()}"  # hosts share a bucket
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except Exception as e:  # noqa: BLE001 - a disk raises OSError, a bucket gcsfs's HTTP errors too
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:200]
        raise ConfigError(f"{directory} cannot be written ({reason}); make it writable or pass another "
                          "--workdir") from None


# Fields a resumed run may change: they change neither what is restored nor what is trained on.
CHANGEABLE_ON_RESUME = ("total_steps", "log.", "checkpoint.", "sample.", "eval.", "sampler.", "nonfinite.",
                        "distributed.", "mesh.", "dcn_mesh.", "sharding_rules", "bench.", "autoencoder_training.",
                        "model.remat_policy", "model.attention_impl", "latents.encode_batch_size",
                        "compile.", "profile.", "data.records", "data.read_",
                        "data.prefetch", "data.bad_records", "data.beam_")


def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Before anything in `workdir` is written: a run whose checkpoints would be resumed with another model,
    optimizer, data, latent space or text encoder is refused, naming every field that differs."""
    # Checkpoint folders only: on several processes, process 0's write probe may already be there while
    # another process checks, before config.json is written.
    if not checkpoint.step_folders(storage.resolve(workdir) / "checkpoints"):
        return
    run, new = (flatten(json.loads(c.to_json_best_effort())) for c in (load_run_config(workdir), config))
    differing = [k for k in sorted(run.keys() | new.keys())
                 if run.get(k) != new.get(k) and not k.startswith(CHANGEABLE_ON_RESUME)]
    if differing:
        fields = "; ".join(f"{k}: run has {run.get(k)!r}, you passed {new.get(k)!r}" for k in differing)
        raise ConfigError(f"{workdir} holds checkpoints of another config ({fields}); resume with the run's values "
                          f"(only {', '.join(f.rstrip('.') for f in CHANGEABLE_ON_RESUME)} may change) or pass "
                          "another --workdir")


def _format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


class Run:
    """Everything a training run holds, built in order by `setup`; `train` runs the loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, on_log=None):
        """`on_log(step, scalars)`, if given, is called with what each log line reports (the notebook's
        progress bar and loss plot)."""
        self.config = config
        self.path = storage.resolve(workdir)
        self.workdir = os.fspath(self.path)
        self.on_log = on_log
        self.is_main = jax.process_index() == 0
        self.created = time.time()

    # --- Setup: validation before any compute, mesh, writers -------------------------------------
    def setup(self) -> "Run":
        config, workdir = self.config, self.workdir
        finetune.resolve_init_from(config)
        self.config = config = with_resolved_paths(config)  # config.json means the same files from any directory
        validate(config, jax.device_count(), jax.process_count(), jax.default_backend(),
                 num_slices=len(sharding.device_slices(jax.devices())))
        warn_unreached_warmup(config)
        self.lock = WorkdirLock(workdir).acquire()  # before anything in the workdir is written
        check_writable(os.fspath(self.path / "checkpoints"))
        check_resumable(workdir, config)
        self.mesh = sharding.run_mesh(config)
        self.rules = sharding.logical_rules(config.sharding_rules)
        self.tensorboard_dir = evaluation.tensorboard_dir(config.log, workdir)
        self.writer = tensorboard_events.tensorboard_writer(self.tensorboard_dir)
        if self.is_main:
            (self.path / "config.json").write_text(config.to_json_best_effort(indent=2))

        # --- Data: records (written first when missing), streamed per phase --------------------------
        self.phases = phases.phases(config)
        logging.info("data: %s at %s px (records: preprocessed when missing, then streamed)",
                     config.data.name, ", ".join(str(p.resolution) for p in self.phases))
        self.data = open_run_data(config)
        self.space = self.data.space
        for phase in self.phases:
            space = self.data.space_at(phase.resolution)
            if not (np.allclose(space.offset, self.space.offset) and np.allclose(space.scale, self.space.scale)):
                logging.warning("the latent normalization estimated on %d px images differs from the one at %d px: "
                                "phases train on differently scaled latents; prefer latents.normalization="
                                "config_factors with phases", phase.resolution, config.data.resolution)
        self.batches = [self._batches(p) for p in self.phases]
        self._stream, self._stream_step = None, None
        self.bad_records = self._bad_records_logged = 0
        text_length, text_dim = self.data.validation["text"].shape[1:]

        # --- Model, optimizer and sharded state ----------------------------------------------------
        self.frozen, frozen_params = load_frozen(config, self.space)
        self.frozen_params = jax.device_put(frozen_params, sharding.replicated(self.mesh))
        self.model = build_model(config, self.space.channels, text_dim,
                                 self.frozen.teacher.dim if self.frozen.teacher else 0)
        self.optimizer, self.schedule = run_optimizer(config)
        resolution = config.data.resolution // self.space.downsample
        self.image_shape = (resolution, resolution, self.space.channels)
        example = train_state.example_inputs(1, resolution, self.space.channels, text_length, text_dim)
        # --- Checkpoints: resume from the newest good one, else initialise ----------------------------
        self.checkpointer = checkpoint.Checkpointer(os.fspath(self.path / "checkpoints"), config.checkpoint.keep,
                                                    config.checkpoint.async_save)
        abstract = train_state.abstract(self.model, self.optimizer, example, self.mesh, self.rules,
                                        ema.enabled(config.ema))
        self.state_shardings = jax.tree.map(lambda x: x.sharding, abstract)
        resumed = self.checkpointer.resume(abstract)
        if resumed is None:
            logging.info("no checkpoint under %s: starting at step 0", self.checkpointer.directory)
            self.state, _ = train_state.create(config.seed, self.model, self.optimizer, example, self.mesh,
                                               self.rules, ema.enabled(config.ema))
            self.counters = dict.fromkeys(checkpoint.COUNTERS, 0)
            if config.init_from:
                self.state = finetune.start_from(config.init_from, self.state, self.model, self.optimizer,
                                                 self.state_shardings)
        else:
            self.state, self.counters = resumed
        self.monitor = nonfinite.Monitor(config.nonfinite.policy, self.counters["skipped_steps"])
        n_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        logging.info("model: %s, %.2fM parameters, mesh %s", config.model.name, n_params / 1e6,
                     dict(self.mesh.shape))

        # --- Compiled functions: every train step shape still to come, compiled before step 0 ------------
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.compile_steps()
        # Replicated, so every process can read the losses when the params span several hosts.
        self.heldout_loss = jax.jit(make_heldout_loss(self.model, config.diffusion),
                                    out_shardings=sharding.replicated(self.mesh))
        self.generator = self._generator((config.data.resolution, config.data.resolution))
        self.evaluators = evaluation.evaluators_by_size(config, self.data, self.heldout_loss,
                                                        self._generator, self.space, self.mesh)
        return self

    def _generator(self, size: tuple[int, int]) -> Generator:
        """Samples at `size` (height, width) pixels."""
        return generator_at(self.model, self.space, self.config, self.config.sampler, size,
                            self.data.negative_text, self.data.negative_mask, self.mesh)

    def _batches(self, phase: phases.Phase) -> pipeline.StepBatches:
        """Phase 0 keeps the plain seed: a run without phases draws the batches it always has."""
        config = phases.phase_config(self.config, phase)
        names, report = training_sets(self.data.manifest, phase.resolution, buckets.grid(config),
                                      phase.global_batch_size)
        logging.info("training images at %d px: %s", phase.resolution, json.dumps(report))
        seed = self.config.seed if phase.index == 0 else (self.config.seed, phase.index)
        return pipeline.phase_batches(config, self.data.directory, self.data.manifest, names,
                                      phase.global_batch_size, seed, jax.process_index(), jax.process_count())

    def step_batches(self) -> list[dict[str, jax.ShapeDtypeStruct]]:
        """An abstract global batch of each shape the run still trains on (every bucket of each phase from
        the current step on), in the same order on every process."""
        step, shapes = int(self.state.step), {}
        for phase, batches in zip(self.phases, self.batches):
            if phase.end <= step:
                continue
            for group in range(len(batches.sets)):
                batch = {k: jax.ShapeDtypeStruct((phase.global_batch_size, *v.shape[1:]), v.dtype,
                                                 sharding=self.batch_sharding)
                         for k, v in self._model_batch(batches.group_batch(group)).items()}
                shapes.setdefault(batch["x0"].shape, batch)
        return list(shapes.values())

    def compile_steps(self) -> dict[tuple[int, ...], float]:
        """Compiles the train step of every shape in `step_batches` (config.compile.threads at a time), into
        `compiled_steps`; returns and keeps in `compile_seconds` the seconds each shape took."""
        cache = compile_ahead.use_cache(self.config.compile.cache_dir, self.workdir)
        logging.info("compilation cache: %s", cache or "off")
        started = time.perf_counter()
        self.compiled_steps, self.compile_seconds = compile_ahead.compile_all(
            self._compile, self.step_batches(), self.config.compile.threads)
        compile_ahead.log_compile_times(self.compile_seconds, time.perf_counter() - started)
        # Hosts take the first step together: CPU collectives (gloo) wait only 30 s for a host still compiling.
        sharding.barrier("t2ijax: train steps compiled")
        return self.compile_seconds

    def _compile(self, batch: dict[str, jax.ShapeDtypeStruct]):
        """The train step for this batch's shape, whose time shift follows its token count."""
        height, width = batch["x0"].shape[1:3]
        shift = time_shift(self.config.diffusion, num_image_tokens(self.config.model, height, width))
        step_fn = make_train_step(self.model, self.optimizer, self.schedule, self.config,
                                  jnp.asarray(self.data.null_text, jnp.float32), jnp.asarray(self.data.null_mask),
                                  shift, self.frozen)
        started = time.perf_counter()
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            compiled = jit_train_step(step_fn, self.state_shardings, self.mesh).lower(
                self.state, batch, self.frozen_params).compile()
        logging.info("train step for batches of %s compiled in %.1f s (time shift %.3f)", batch["x0"].shape,
                     time.perf_counter() - started, shift)
        return compiled

    def step_for(self, batch: dict[str, jax.Array]):
        """The compiled train step of this batch's shape."""
        shape = batch["x0"].shape
        if shape not in self.compiled_steps:
            raise RuntimeError(f"no train step was compiled for batches of {shape} (compiled: "
                               f"{sorted(self.compiled_steps)}): step_batches missed a shape the data makes")
        return self.compiled_steps[shape]

    def train_step(self, state, batch: dict[str, jax.Array]):
        return self.step_for(batch)(state, batch, self.frozen_params)

    def device_batch(self, step: int) -> dict[str, jax.Array]:
        """The global batch of `step`, from a stream of the phase's batches read ahead (restarted at `step`
        when it is not the stream's next one: a resume, a new phase)."""
        phase = phases.phase_at(self.phases, step)
        if self._stream_step != step:
            stream = self.batches[phase.index].stream(step - phase.start, phase.end - phase.start, self.config.data)
            self._stream = iter(stream)
        local = next(self._stream)
        self._stream_step = step + 1 if step + 1 < phase.end else None
        self.bad_records += int(local.pop(pipeline.BAD_RECORDS))
        if self.bad_records > self._bad_records_logged:
            logging.warning("%d corrupt training records skipped so far (data.bad_records=skip): each replaced by "
                            "the next readable one", self.bad_records)
            self._bad_records_logged = self.bad_records
        return sharding.global_batch(self._model_batch(local), self.batch_sharding)

    def _model_batch(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A local batch as the train step takes it: x0 in model space (and the images when a technique needs them)."""
        images = {"image": local["image"]} if needs_images(self.config) else {}
        return {"x0": pipeline.model_inputs(local, self.space), "text": local["text"], "text_mask": local["text_mask"],
                **images}

    # --- Periodic actions ------------------------------------------------------------------------------
    def write_samples(self, step: int) -> str:
        """samples/step_<step>.png: an image per config.sample.prompts, its prompt written under it, enlarged to
        be seen (the same grid goes to TensorBoard); samples/prompts.txt lists the prompts in tile order."""
        images = self.generator(self.state.sampling_params, self.data.prompts["text"], self.data.prompts["text_mask"])
        captions = [str(c) for c in self.data.prompts["caption"]]
        grid = image_grid(images, captions=captions, scale=view_scale(*images.shape[1:3]))
        samples = self.path / "samples"
        path = samples / f"step_{step:07d}.png"
        if self.is_main:
            samples.mkdir(parents=True, exist_ok=True)
            png = io.BytesIO()
            Image.fromarray(grid).save(png, format="png")
            path.write_bytes(png.getvalue())
            (samples / "prompts.txt").write_text("".join(f"{caption}\n" for caption in captions))
        self.writer.write_images(step, {"samples": grid[None]})
        return os.fspath(path)

    def evaluate(self, step: int) -> str:
        metrics = evaluation.evaluate_at_sizes(self.evaluators, step, self.state.sampling_params)
        path = os.fspath(self.path / "eval" / f"step_{step:07d}.json")
        evaluation.write_json(metrics, path)
        self.writer.write_scalars(step, {f"eval/{k}": v for k, v in evaluation.scalars(metrics).items()})
        logging.info("eval at step %d: %s", step, json.dumps(metrics, sort_keys=True))
        return path

    # --- Bookkeeping of finished steps -------------------------------------------------------------------
    def last_checkpoint(self) -> int | None:
        self.checkpointer.wait()
        return self.checkpointer.latest_step()

    def check_finite(self, step: int) -> None:
        """Fetches the flags of the steps not checked yet and applies config.nonfinite.policy."""
        fresh = step - self.checked
        if fresh:
            self.pending[-fresh:] = jax.device_get(self.pending[-fresh:])
            self.monitor.check(self.pending[-fresh:], self.checked, self.last_checkpoint)
            self.checked = step
            self.counters["skipped_steps"] = self.monitor.skipped_steps

    def log(self, step: int) -> None:
        total = self.config.total_steps
        finite = [m for m in self.pending if not m["nonfinite"]]
        summary = {k: float(np.mean([m[k] for m in finite])) for k in ("loss", "grad_norm", "learning_rate")
                   if finite}
        elapsed = time.time() - self.last_log_time
        steps_per_s = len(self.pending) / elapsed
        batch_size = phases.phase_at(self.phases, step - 1).global_batch_size
        summary.update(self.counters, steps_per_sec=steps_per_s, images_per_sec=steps_per_s * batch_size)
        self.writer.write_scalars(step, summary)
        logging.info("step %d/%d  loss %.4f  grad_norm %.3f  lr %.2e  %.2f steps/s  %.0f img/s  ETA %s%s",
                     step, total, summary.get("loss", np.nan), summary.get("grad_norm", np.nan),
                     summary.get("learning_rate", np.nan), steps_per_s, summary["images_per_sec"],
                     _format_eta((total - step) / steps_per_s),
                     f"  skipped {self.counters['skipped_steps']}" if self.counters["skipped_steps"] else "")
        self.pending, self.last_log_time = [], time.time()
        if self.on_log is not None:
            self.on_log(step, summary)

    def log_first_step(self, step: int, metrics: dict[str, jax.Array]) -> None:
        logging.info("step %d done (loss %.4f), %.0f s after setup began; then a line every %d steps", step,
                     float(metrics["loss"]), time.time() - self.created, self.config.log.every_steps)

    # --- The loop ----------------------------------------------------------------------------------
    def train(self) -> dict[str, str]:
        """Trains to config.total_steps. Raises preemption.Preempted after SIGTERM or SIGINT (a checkpoint
        at that step is on disk), NonFiniteError under the 'halt' policy, StorageError as soon as a save fails."""
        config = self.config
        total = config.total_steps
        step = int(self.state.step)
        self.pending, self.checked, self.last_log_time = [], step, time.time()
        outputs = {}
        every = lambda n: bool(n) and step % n == 0
        first = step + 1
        window = profiling.ProfileWindow(config.profile, self.workdir, jax.process_index())
        with (preemption.PreemptionWatch() as preempt, window, jax.set_mesh(self.mesh),
              nn.logical_axis_rules(self.rules)):
            while step < total:
                window.before_step(step)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = self.device_batch(step)
                    with profiling.no_implicit_transfers():
                        self.state, metrics = self.train_step(self.state, batch)
                self.pending.append(metrics)
                step += 1
                window.after_step(step, self.state)
                if step == first:
                    self.log_first_step(step, metrics)
                self.checkpointer.check_for_errors()  # an asynchronous save that failed stops the run now
                end, stop = step == total, preempt.reached(step)
                due = dict(log=end or every(config.log.every_steps),
                           checkpoint=end or every(config.checkpoint.every_steps) or stop,
                           samples=end or every(config.sample.every_steps), eval=end or every(config.eval.every_steps))
                if any(due.values()):
                    self.check_finite(step)
                if due["log"]:
                    self.log(step)
                if due["checkpoint"]:
                    self.checkpointer.save(self.state, self.counters)
                if stop:
                    self.close()
                    raise preemption.Preempted(step, preempt.cause)
                if due["samples"]:
                    outputs["samples"] = self.write_samples(step)
                if due["eval"]:
                    outputs["eval"] = self.evaluate(step)
            if "eval" not in outputs:  # resumed at the end: still report
                outputs["samples"] = self.write_samples(step)
                outputs["eval"] = self.evaluate(step)
        final_eval = self.path / "eval.json"
        if self.is_main:
            final_eval.write_text(storage.Path(outputs["eval"]).read_text())
        self.close()
        outputs.update(eval=os.fspath(final_eval), checkpoints=self.checkpointer.directory,
                       tensorboard=self.tensorboard_dir)
        return outputs


    def close(self) -> None:
        """Waits for the pending checkpoint, flushes the writers and frees the workdir for the next trainer."""
        self.checkpointer.close()
        self.writer.flush()
        self.lock.release()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint). Returns output paths."""
    return Run(config, workdir).setup().train()
