"""config.data.captions and config.data.augmentation: bad settings fail in one line before compute, and
a short run trains on mixed caption fields and every augmentation view."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.data import buckets, pipeline, write_records
from t2ijax.data.run_data import training_sets
from t2ijax.errors import ConfigError
from t2ijax.training.loop import Run

MIXED = (("caption_long", 0.8), ("caption_short", 0.2))


@pytest.mark.parametrize("overrides, message", [
    ({"captions": (("caption_long", -0.5), ("caption_short", 1.0))}, "negative weight"),
    ({"captions": (("caption_long", 0.0), ("caption_short", 0))}, "every weight is 0"),
    ({"captions": (("caption_long", 1.0), ("caption_long", 1.0))}, "names a field twice"),
    ({"captions": ("caption_long",)}, "must be (field, weight) pairs"),
    ({"augmentation": "crop", "crop_min_scale": 0.0}, "crop_min_scale=0.0 must be in (0, 1]"),
    ({"augmentation": "flip_crop", "crop_min_scale": 1.5}, "crop_min_scale=1.5 must be in (0, 1]"),
    ({"augmentation": "crop", "crop_views": 0}, "crop_views=0 must be an integer >= 1"),
    ({"augmentation": "rotate"}, "is not one of: crop, flip, flip_crop, none"),
])
def test_bad_caption_and_augmentation_settings_fail_in_one_line(overrides, message, tmp_path):
    config = tiny_config(str(tmp_path))
    config.data.update(overrides)
    with pytest.raises(ConfigError) as error:
        validate(config, num_devices=1)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_caption_field_the_dataset_lacks_is_named_with_the_fields_it_has(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.data.captions = (("caption", 1.0),)
    validate(config, num_devices=1)  # which fields a dataset has is known once it is read
    config.data.records = str(tmp_path)
    with pytest.raises(ConfigError, match=r"names caption, which dataset 'shapes' lacks; its caption fields are: "
                                          r"caption_long, caption_short$"):
        write_records.write(config)


def _step_batches(config) -> pipeline.StepBatches:
    """The training batches of `config`, from its records (written when missing), as a new process opens them."""
    directory, found = write_records.write(config)
    names, _ = training_sets(found, config.data.resolution, buckets.grid(config), config.data.global_batch_size)
    return pipeline.phase_batches(config, directory, found, names, config.data.global_batch_size, config.seed, 0, 1)


def test_two_steps_on_mixed_captions_and_flip_crop_views(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.data.update(captions=MIXED, augmentation="flip_crop", crop_views=1)
    run = Run(config, str(tmp_path)).setup()
    (records,) = run.batches[0].sets
    record = records.read([0])[0]
    assert len(records) == 256 and len(record["image"]) == 4 and record["caption"].shape == (4, 2)  # views, fields
    assert len(record["text_lengths"]) <= 4 * 2 and record["text"].shape[1:] == (384,)
    state = run.state
    for step in range(2):
        state, metrics = run.train_step(state, run.device_batch(step))
        assert np.isfinite(float(metrics["loss"]))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))


def test_a_resumed_process_draws_the_batches_of_an_uninterrupted_one(data_dir):
    """Views and caption fields included: a new process (records opened again, the stream started again) started
    at step 25 gets what steps 25.. of one long run get, across the epoch boundary at step 32."""
    config = tiny_config(data_dir)
    config.data.update(captions=MIXED, augmentation="flip", crop_views=1)
    uninterrupted = _step_batches(config)
    resumed = list(_step_batches(config).stream(25, 40, config.data))
    for step, found in enumerate(resumed, start=25):
        expected = uninterrupted(step)
        for key in ("image", "text", "text_mask"):
            np.testing.assert_array_equal(found[key], expected[key], err_msg=f"step {step} {key}")

    (records,) = uninterrupted.sets
    mirrored = []
    for step in range(40):
        _, indices, _ = uninterrupted.order.draw(step)
        for image, record in zip(uninterrupted(step)["image"], records.read(indices)):
            views = [pipeline.decode_png(view) for view in record["image"]]
            # Scenes symmetric about the vertical axis look the same mirrored: count only the others.
            if not np.array_equal(*views):
                mirrored.append(np.array_equal(image, views[1]))
    assert len(mirrored) > 100 and 0.4 < np.mean(mirrored) < 0.6, (len(mirrored), np.mean(mirrored))  # each half
